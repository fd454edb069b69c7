"""Layer: own session and process group, killed with the broker.

Every worker starts in a session of its own (start_new_session, or setsid
after the launcher's fork), so it leads its own process group and the broker
can kill the whole group. The parent-death signal makes the kernel kill the
worker if the broker dies.

The kernel clears that signal whenever the process's effective or filesystem
uid or gid changes (prctl(2)), which the identity layer does as root: so it
is set again once the credentials are final (rearm), in the monitor and in
PID 1, each checking afterwards that its parent is still the one it expects.
Without that, a busy worker outlived a SIGKILLed broker until its engine
finished. The engine, PID 1's child, dies with the pid namespace
(workers/search.py).
"""

from __future__ import annotations

import ctypes
import os
import signal

from workers.confine import namespaces
from workers.confine.layer import LayerError

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def apply(expected_parent: int) -> None:
    if os.getsid(0) != os.getpid() or os.getpgrp() != os.getpid():
        raise LayerError("session", "worker is not the leader of its own session")
    die_with_parent(expected_parent)


def die_with_parent(expected_parent: int) -> None:
    """SIGKILL when the parent (the broker) exits; fail if it already has."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise LayerError("session", f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}")
    # The broker may have died before prctl took effect.
    if os.getppid() != expected_parent:
        raise LayerError("session", "the broker exited during start-up")


def rearm(expected_parent: int, monitor_alive_fd: int | None) -> None:
    """Set the parent-death signal again after the identity change cleared it.

    In PID 1 of a new pid namespace the parent is the monitor, outside the
    namespace: getppid() says 0 either way, so the monitor's liveness pipe
    (namespaces.py) tells whether it died before the signal was set."""
    if monitor_alive_fd is None:
        die_with_parent(expected_parent)
        return
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise LayerError("session", f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}")
    if namespaces.monitor_gone(monitor_alive_fd):
        raise LayerError("session", "the worker's monitor exited during start-up")
