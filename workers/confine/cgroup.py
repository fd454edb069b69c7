"""Layer: join the worker's own cgroup, which caps its memory and process count.

The broker creates the cgroup before starting the worker and removes it after
reaping (broker/sandbox/cgroup.py); joining it is the worker's first
privileged act, so every process it ever starts is inside. With a new cgroup
namespace the worker then sees its own cgroup as the root.
"""

from __future__ import annotations

import os

from workers.confine.layer import LayerError


def apply(dirs: list[str], unavailable: str) -> str:
    if not dirs:
        raise LayerError("cgroup", unavailable or "no worker cgroup was created")
    # v1: move this thread through "tasks" rather than the process through
    # "cgroup.procs". For the calling thread the kernel skips its global
    # threadgroup lock, whose write side waits for an RCU grace period (12-16 ms
    # per worker here, serialising every worker start). The worker is single-
    # threaded at this point (checked), so the thread is the whole process.
    member_file = "tasks" if len(dirs) == 2 and _single_threaded() else "cgroup.procs"
    try:
        for path in dirs:
            _write(os.path.join(path, member_file), b"0")
        membership = _read("/proc/self/cgroup")
    except OSError as exc:
        raise LayerError("cgroup", f"cannot join the worker cgroup: {exc.strerror}") from None
    for path in dirs:
        if os.path.basename(path) not in membership:
            raise LayerError("cgroup", f"not a member of {os.path.basename(path)} after joining it")
    return "v2" if len(dirs) == 1 else "v1"


# Plain descriptors rather than open(): the text-file stack costs a starting worker
# ~0.3 ms of CPU here, much of it copy-on-write faults of the launcher's pages.
def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(0, f"short write to {path}")
    finally:
        os.close(fd)


def _read(path: str, limit: int = 65536) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def _single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False
