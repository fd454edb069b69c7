"""Broker side of the cgroup layer: one cgroup per worker, capping memory and process count.

The broker creates one cgroup per worker before starting it and removes it
after reaping; the worker joins it as its first privileged act
(workers/confine/cgroup.py), so every process it ever starts is inside.
cgroup v2 is used when the host offers a v2 hierarchy with the memory and
pids controllers; otherwise the v1 memory and pids hierarchies. The limits
are per worker, unlike RLIMIT_NPROC, which counts every process of the
worker uid.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bastion_wire.plan import Cgroup

CGROUP_ROOT = Path("/sys/fs/cgroup")
REMOVE_ATTEMPTS = 50


class Remover:
    """Removes reaped workers' cgroups on a background thread. On cgroup v1 one
    rmdir takes ~4 ms (the kernel offlines the memory cgroup), which no call
    should wait for; the broker drains the queue before it exits."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, dirs: list[str]) -> None:
        if not dirs:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bastion-cgroup-remover", daemon=True)
                self._thread.start()
        self._queue.put(dirs)

    def _run(self) -> None:
        while (dirs := self._queue.get()) is not None:
            remove(dirs)

    def drain(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout_s)


@dataclass(frozen=True)
class CgroupHost:
    """Where this broker may create worker cgroups, or why it cannot."""

    version: str  # "v2", "v1" or "" (unavailable)
    bases: tuple[Path, ...]  # v2: one base; v1: memory base, pids base
    reason: str = ""
    remover: Remover = field(default_factory=Remover, compare=False, repr=False)

    def discard(self, dirs: list[str]) -> None:
        """Remove a reaped worker's cgroups soon, off the caller's path."""
        self.remover.submit(dirs)

    def create(self, name: str, limits: Cgroup) -> list[str]:
        if not self.version:
            raise OSError(self.reason)
        if self.version == "v2":
            path = self.bases[0] / name
            path.mkdir(mode=0o755)
            _write(path / "memory.max", limits.memory_bytes)
            _write_optional(path / "memory.swap.max", 0)
            _write(path / "pids.max", limits.pids)
            return [str(path)]
        memory, pids = self.bases[0] / name, self.bases[1] / name
        memory.mkdir(mode=0o755)
        pids.mkdir(mode=0o755)
        _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
        _write_optional(memory / "memory.memsw.limit_in_bytes", limits.memory_bytes)
        _write(pids / "pids.max", limits.pids)
        return [str(memory), str(pids)]

    def close(self) -> None:
        self.remover.drain()
        for base in self.bases:
            try:
                base.rmdir()
            except OSError:
                pass


def _write(path: Path, value: int | str) -> None:
    with open(path, "w") as file:
        file.write(str(value))


def _write_optional(path: Path, value: int) -> None:
    if path.exists():
        try:
            _write(path, value)
        except OSError:
            pass


def _v2_mount() -> Path | None:
    for candidate in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        controllers = candidate / "cgroup.controllers"
        if controllers.exists() and {"memory", "pids"} <= set(controllers.read_text().split()):
            return candidate
    return None


def broker_tag(pid: int | None = None) -> str:
    """This broker's base directory name: its pid namespace, pid and start time.

    A pid alone names a process only inside one pid namespace, and the cgroup tree
    is shared by every namespace on the host (a container, a chroot with its own
    /proc): with names made of the pid alone, a broker that could not see another
    namespace's broker in its /proc took that broker's cgroups for stale ones and
    removed them, killing its workers. The start time tells a reused pid apart."""
    pid = os.getpid() if pid is None else pid
    return f"bastion-{_pid_namespace()}-{pid}-{_start_time(pid)}"


def _pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])  # the fields after the command's ")"


def _is_stale(name: str) -> bool:
    """True for the base of a broker of this pid namespace that is gone, False for
    a live one, another namespace's, or the old pid-only name (which cannot be placed)."""
    parts = name.removeprefix("bastion-").split("-")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return False
    namespace, pid, started = (int(part) for part in parts)
    return namespace == _pid_namespace() and _start_time(pid) != started


def _remove_stale(parent: Path) -> None:
    """Base directories left by brokers of this pid namespace that died without
    cleaning up. An old pid-only name (an older Bastion) cannot be placed: it may
    belong to a live broker of another namespace, even an empty directory in it
    may be a worker's cgroup about to be joined, so it is never touched."""
    for base in parent.glob("bastion-*"):
        if not _is_stale(base.name) or not base.is_dir():
            continue
        for child in base.iterdir():
            if child.is_dir():
                remove([str(child)])
        with contextlib.suppress(OSError):
            base.rmdir()


def detect(broker_tag: str) -> CgroupHost:
    """Pick v2, else v1; create this broker's base directories."""
    if os.geteuid() != 0:
        return CgroupHost("", (), "worker cgroups need root (no delegated cgroup is configured)")
    v2 = _v2_mount()
    try:
        if v2 is not None:
            _remove_stale(v2)
            base = v2 / broker_tag
            base.mkdir(mode=0o755, exist_ok=True)
            _write(v2 / "cgroup.subtree_control", "+memory +pids")
            _write(base / "cgroup.subtree_control", "+memory +pids")
            return CgroupHost("v2", (base,))
        memory, pids = CGROUP_ROOT / "memory", CGROUP_ROOT / "pids"
        if (memory / "cgroup.procs").exists() and (pids / "cgroup.procs").exists():
            bases = (memory / broker_tag, pids / broker_tag)
            _remove_stale(memory)
            _remove_stale(pids)
            for base in bases:
                base.mkdir(mode=0o755, exist_ok=True)
            return CgroupHost("v1", bases)
    except OSError as exc:
        return CgroupHost("", (), f"cannot create worker cgroups: {exc.strerror or exc}")
    return CgroupHost("", (), "no cgroup v2 memory+pids controllers and no v1 memory and pids hierarchies")


PEAK_FILES = ("memory.peak", "memory.max_usage_in_bytes")  # v2 (kernel >= 5.19), v1


def peak_memory(dirs: list[str]) -> int | None:
    """The worker's peak memory use in bytes, as its own cgroup counted it. Unlike
    rusage's maxrss it does not include the broker's size, which a child inherits."""
    for path in dirs:
        for name in PEAK_FILES:
            try:
                return int((Path(path) / name).read_text().strip())
            except (OSError, ValueError):
                continue
    return None


OOM_FILES = ("memory.events", "memory.oom_control")  # v2, v1: both have an "oom_kill N" line
LIMIT_FILES = ("memory.max", "memory.limit_in_bytes")  # v2, v1


def oom_kills(dirs: list[str]) -> int | None:
    """How many processes of a live worker's cgroup its memory limit killed (None: unknown)."""
    for path in dirs:
        for name in OOM_FILES:
            try:
                text = (Path(path) / name).read_text()
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
    return None


def memory_limit(dirs: list[str]) -> int | None:
    """The memory limit in force for a worker's cgroup, in bytes."""
    for path in dirs:
        for name in LIMIT_FILES:
            try:
                return int((Path(path) / name).read_text().strip())
            except (OSError, ValueError):
                continue
    return None


def remove(dirs: list[str]) -> None:
    """Remove a reaped worker's cgroups, killing anything left inside first."""
    for path in dirs:
        for _ in range(REMOVE_ATTEMPTS):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                _kill_members(Path(path))
                time.sleep(0.01)


def _kill_members(path: Path) -> None:
    try:
        members = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return
    for pid in members:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
