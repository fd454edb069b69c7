"""Layer: own session and process group, killed with the broker.

Every worker starts in a session of its own (setsid after the launcher's
clone), so it leads its own process group and the broker can kill the whole
group. The parent-death signal makes the kernel kill the worker if the broker
dies: the worker is the broker's own child (CLONE_PARENT).

Whether the broker died before the signal was set cannot be read from
getppid(): PID 1 of a new pid namespace sees 0 there, its parent being
outside. So the launcher hands every worker a pidfd of the broker, opened
while the broker was provably its parent; it is readable once the broker has
exited. The kernel clears the signal whenever the process's effective or
filesystem uid or gid changes (prctl(2)), which the identity layer does as
root: so it is set again once the credentials are final, and checked the
same way; then the pidfd is closed (workers/confine/order.py). Without that, a busy worker outlived a
SIGKILLed broker until its engine finished. The engine, PID 1's child, dies
with the pid namespace (workers/engine_process.py).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal

from workers.confine.layer import LayerError

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def apply(broker_pidfd: int) -> None:
    if os.getsid(0) != os.getpid() or os.getpgrp() != os.getpid():
        raise LayerError("session", "worker is not the leader of its own session")
    die_with_broker(broker_pidfd)


def die_with_broker(broker_pidfd: int) -> None:
    """SIGKILL when the parent (the broker) exits; fail if it already has."""
    _set_parent_death_signal()
    # The broker may have died before prctl took effect.
    if broker_gone(broker_pidfd):
        raise LayerError("session", "the broker exited during start-up")


def broker_gone(broker_pidfd: int) -> bool:
    """True once the process behind the pidfd has exited (or the descriptor is no pidfd)."""
    try:
        return bool(select.select([broker_pidfd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def die_with_parent(expected_parent: int) -> None:
    """For the launcher, an ordinary child: SIGKILL when its parent exits; fail if it already has."""
    _set_parent_death_signal()
    if os.getppid() != expected_parent:
        raise LayerError("session", "the broker exited during start-up")


def open_broker_pidfd(expected_parent: int) -> int:
    """In the launcher: a pidfd of its parent, the broker, for the workers it clones.
    Checked after opening: had the broker died first, the pid could name another process."""
    try:
        pidfd = os.pidfd_open(expected_parent)
    except OSError as exc:
        raise LayerError("session", f"pidfd_open(broker): {exc.strerror}") from None
    if os.getppid() != expected_parent:
        os.close(pidfd)
        raise LayerError("session", "the broker exited during start-up")
    return pidfd


def _set_parent_death_signal() -> None:
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise LayerError("session", f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}")
