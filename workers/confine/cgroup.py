"""Layer: join the worker's own cgroup, which caps its memory and process count.

The broker creates the cgroup before starting the worker and removes it after
reaping (broker/sandbox/cgroup.py); joining it is the worker's first
privileged act, so every process it ever starts is inside. With a new cgroup
namespace the worker then sees its own cgroup as the root.
"""

from __future__ import annotations

import os
from pathlib import Path

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
            _write(Path(path) / member_file, 0)
        with open("/proc/self/cgroup") as file:
            membership = file.read()
    except OSError as exc:
        raise LayerError("cgroup", f"cannot join the worker cgroup: {exc.strerror}") from None
    for path in dirs:
        if os.path.basename(path) not in membership:
            raise LayerError("cgroup", f"not a member of {os.path.basename(path)} after joining it")
    return "v2" if len(dirs) == 1 else "v1"


def _write(path: Path, value: int) -> None:
    with open(path, "w") as file:
        file.write(str(value))


def _single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False
