"""Layer: own session and process group, killed with the broker.

Every worker starts in a session of its own (start_new_session, or setsid
after the launcher's fork), so it leads its own process group and the broker
can kill the whole group. The parent-death signal makes the kernel kill the worker if the broker dies.
"""

from __future__ import annotations

import ctypes
import os
import signal

from broker.sandbox.layer import LayerError

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
