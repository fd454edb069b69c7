"""Layer: close every descriptor the worker was not explicitly given.

Kept: stdio, the channel to the broker, and until the session layer's second
step (workers/confine/order.py) the broker's pidfd, which tells the worker
whether the broker died before its parent-death signal was set again.
"""

from __future__ import annotations

import os

from workers.confine.layer import LayerError


def apply(keep: set[int]) -> None:
    """Keep stdio and `keep`; everything else is closed and must stay closed."""
    keep = keep | {0, 1, 2}
    for fd in _open_fds():
        if fd not in keep:
            os.close(fd)
    leftover = _open_fds() - keep
    if leftover:
        raise LayerError("fd_hygiene", f"descriptors still open: {sorted(leftover)}")
    for fd in keep - {0, 1, 2}:
        os.set_inheritable(fd, False)


def _open_fds() -> set[int]:
    # listdir itself opens a descriptor, which is gone again afterwards.
    fds = {int(name) for name in os.listdir("/proc/self/fd")}
    return {fd for fd in fds if _is_open(fd)}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
