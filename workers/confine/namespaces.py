"""Layer: new mount, pid, net, ipc, uts and cgroup namespaces (plus user when not root).

unshare() moves the worker into every new namespace except the pid one,
which only its children enter. So the worker forks: the child becomes PID 1
of an empty pid namespace and goes on confining itself; the parent stays
behind as a small monitor that holds nothing (its channel is closed), waits
for the child and exits the same way, so the broker's pidfd, wait4 and audit
see the child's real fate (exit status or killing signal).

PID 1 takes the parent-death signal from the monitor, and keeps the read end
of a pipe whose write end only the monitor holds: getppid() is 0 inside the
namespace whether the monitor lives or not, so that pipe's EOF is how PID 1
learns the monitor is gone when it sets the signal again after the identity
change (workers/confine/session.py, rearm).

A new network namespace has only a loopback interface, and it is down: the
worker can reach no address at all, not even 127.0.0.1.
"""

from __future__ import annotations

import os
import resource
import select
import signal
from collections.abc import Callable
from typing import NoReturn

from workers.confine import syscalls
from workers.confine.layer import LayerError

FLAGS = {
    "mount": syscalls.CLONE_NEWNS,
    "pid": syscalls.CLONE_NEWPID,
    "net": syscalls.CLONE_NEWNET,
    "ipc": syscalls.CLONE_NEWIPC,
    "uts": syscalls.CLONE_NEWUTS,
    "cgroup": syscalls.CLONE_NEWCGROUP,
}
EXIT_MONITOR_LOST = 71


def apply(
    names: list[str],
    user_namespace: bool,
    inner_ids: tuple[int, int],
    outer_ids: tuple[int, int],
    monitor_closes: set[int],
    harden_monitor: Callable[[], None],
) -> int | None:
    """Unshare; with a pid namespace, fork and return only in the child (PID 1),
    with the read end of the monitor's liveness pipe (the caller closes it)."""
    flags = 0
    for name in names:
        flags |= FLAGS[name]
    if user_namespace:
        flags |= syscalls.CLONE_NEWUSER
    try:
        syscalls.unshare(flags)
    except OSError as exc:
        raise LayerError(
            "namespaces", f"unshare({', '.join(names)}{', user' if user_namespace else ''}): {exc.strerror}"
        ) from None
    if user_namespace:
        _map_ids(inner_ids, outer_ids)
    if "pid" in names:
        return _become_pid_one(monitor_closes, harden_monitor)
    return None


def _map_ids(inner: tuple[int, int], outer: tuple[int, int]) -> None:
    """Map exactly one id: the worker's own outer uid/gid appear as `inner` inside."""
    try:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{inner[0]} {outer[0]} 1"),
            ("gid_map", f"{inner[1]} {outer[1]} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as file:
                file.write(text)
    except OSError as exc:
        raise LayerError("namespaces", f"cannot write the user namespace id maps: {exc.strerror}") from None


def _become_pid_one(monitor_fds: set[int], harden_monitor: Callable[[], None]) -> int:
    alive_r, alive_w = os.pipe()
    try:
        child = os.fork()
    except OSError as exc:
        raise LayerError("namespaces", f"fork into the pid namespace: {exc.strerror}") from None
    if child == 0:
        os.close(alive_w)
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
        # If the monitor died before the line above, its end of the pipe is closed.
        if monitor_gone(alive_r):
            os._exit(EXIT_MONITOR_LOST)
        if os.getpid() != 1:
            raise LayerError("namespaces", "the worker is not PID 1 of its pid namespace")
        return alive_r
    os.close(alive_r)
    for fd in monitor_fds:
        os.close(fd)  # the monitor keeps no channel to the broker
    try:
        harden_monitor()  # it also gives up root and every capability
    except Exception:  # noqa: BLE001 - a monitor that cannot be hardened must not linger
        os.kill(child, signal.SIGKILL)
        os._exit(EXIT_MONITOR_LOST)
    _monitor(child)


def monitor_gone(alive_r: int) -> bool:
    """True once the monitor has exited: its write end, the only one, is closed."""
    return bool(select.select([alive_r], [], [], 0)[0])


def _monitor(child: int) -> NoReturn:
    """Wait for the PID 1 child, then end exactly as it ended. Never returns."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(EXIT_MONITOR_LOST)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            signal.signal(number, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.waitstatus_to_exitcode(status))
