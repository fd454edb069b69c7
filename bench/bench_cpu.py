"""CPU time of a server's whole process tree, for "server CPU per call".

Bastion's CPU is spread over processes that come and go: the broker, its
launcher, and per call a worker (the broker's child through CLONE_PARENT, PID 1
of its own pid namespace) and the engine it starts. A reaped
process's time reaches its parent's children fields only once it is waited
for, and a process killed before it reaps its own child hands that child to
whoever reaps it next, so summing /proc figures over a tree can miss time.

So each server runs in its own cgroup v1 `cpuacct` group when the host has that
hierarchy and the bench may create groups in it (root): the server's command is
wrapped in `sh -c 'echo $$ > GROUP/cgroup.procs && exec "$@"'`, so the server
and everything it ever starts are charged to the group whether or not anyone
waits for them, and `cpuacct.usage` (ns) is read before and after a run.
Bastion's own cgroups (memory, pids) are other hierarchies, so they do not move
its workers out of this one. Otherwise the fallback sums, over the live tree,
each process's user+system time plus its reaped children's (psutil), which
undercounts what was reaped outside the tree. Neither counts kernel threads
(the namespace teardown work the kernel defers), nor the bench client.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil

CPUACCT = Path("/sys/fs/cgroup/cpuacct")
JOIN_AND_EXEC = 'echo $$ > "$0" && exec "$@"'
SETTLE_STEP_S = 0.05
SETTLE_QUIET_S = 0.001  # less CPU than this per step: the tree is idle
REMOVE_TRIES = 40


@dataclass
class CpuGroup:
    """A cpuacct cgroup for one server (None from create() when unavailable)."""

    path: Path

    @classmethod
    def create(cls, name: str) -> CpuGroup | None:
        path = CPUACCT / f"bastion-bench-{os.getpid()}-{name}-{uuid.uuid4().hex[:6]}"
        try:
            path.mkdir()
        except OSError:
            return None
        return cls(path)

    def wrap(self, command: str, args: list[str]) -> tuple[str, list[str]]:
        """The command line that joins this group, then becomes `command` (same pid)."""
        return "/bin/sh", ["-c", JOIN_AND_EXEC, str(self.path / "cgroup.procs"), command, *args]

    def usage_s(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        """rmdir once the group's last process is gone (bounded: ~2 s)."""
        for _ in range(REMOVE_TRIES):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(SETTLE_STEP_S)


def tree_cpu_s(root: psutil.Process) -> float:
    """Fallback: user+system of the live tree, each with its reaped children's."""
    total = 0.0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return total
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


@dataclass
class CpuMeter:
    """Reads one server's CPU seconds so far, from its group or its process tree."""

    process: psutil.Process
    group: CpuGroup | None

    @property
    def method(self) -> str:
        return "cgroup v1 cpuacct.usage" if self.group is not None else "psutil tree (live + reaped children)"

    def read(self) -> float:
        if self.group is not None:
            try:
                return self.group.usage_s()
            except (OSError, ValueError):
                pass
        return tree_cpu_s(self.process)

    def main_s(self) -> float:
        """The server process's own user+system CPU (Bastion: the broker alone, without its
        launcher, workers and engines; the baseline: the server without its grep children)."""
        try:
            times = self.process.cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    async def settled(self, limit_s: float = 2.0) -> float:
        """The reading once the tree has gone idle (teardowns and pool refills done), bounded."""
        deadline = time.monotonic() + limit_s
        last = self.read()
        while time.monotonic() < deadline:
            await anyio.sleep(SETTLE_STEP_S)
            now = self.read()
            if now - last < SETTLE_QUIET_S:
                return now
            last = now
        return last


def remove_leftover_groups() -> int:
    """rmdir the groups this bench process created that are still there (after its cleanup)."""
    left = 0
    for path in CPUACCT.glob(f"bastion-bench-{os.getpid()}-*"):
        CpuGroup(path).remove()
        left += 1
    return left
