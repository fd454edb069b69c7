"""MCP sessions over stdio for bench/run.py, and the processes behind them.

A session is an MCP client connected to a server subprocess (Bastion or the
baseline) plus the psutil handle of that subprocess, so the bench can sample
its memory. Server stderr goes to a file, never to the bench's output.
Each server runs in a cpuacct cgroup of its own when the host allows it
(bench_cpu.py), so the CPU of its whole tree can be read per run.
Every process the bench starts is a descendant of it; kill_descendants() is
the last-resort cleanup (also on Ctrl-C).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import psutil
from bench_cpu import CpuGroup, CpuMeter
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

BENCH = Path(__file__).resolve().parent
BASELINE_SCRIPT = BENCH / "baseline_server.py"
WORKER_NAME = "bastion-worker"  # workers.main sets it as the process name
SAMPLE_INTERVAL_S = 0.02
FIND_TIMEOUT_S = 10.0


@dataclass
class Session:
    name: str
    client: Client
    process: psutil.Process
    cpu: CpuMeter


@dataclass
class Timed:
    seconds: float
    result: types.CallToolResult | None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.result is not None and not self.result.is_error

    @property
    def lines(self) -> int:
        structured = self.result.structured_content if self.result is not None else None
        return len(structured.get("lines", [])) if structured else 0

    @property
    def error(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.result is None or not self.result.is_error:
            return ""
        content = self.result.content[0]
        return content.text[:120] if isinstance(content, types.TextContent) else "error"


def _find_child(marker: str) -> psutil.Process:
    """The descendant of this process whose command line contains `marker`."""
    deadline = time.monotonic() + FIND_TIMEOUT_S
    while time.monotonic() < deadline:
        for proc in psutil.Process().children(recursive=True):
            try:
                if marker in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                    return proc
            except psutil.Error:
                continue
        time.sleep(0.05)
    raise RuntimeError(f"server process with {marker!r} in its command line not found")


@asynccontextmanager
async def open_session(
    name: str, command: str, args: list[str], marker: str, stderr_path: Path, timeout_s: float
) -> AsyncIterator[Session]:
    group = CpuGroup.create(name)
    if group is not None:
        command, args = group.wrap(command, args)
    params = StdioServerParameters(command=command, args=args, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    try:
        with open(stderr_path, "a") as errlog:
            async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=timeout_s) as client:
                process = _find_child(marker)
                yield Session(name, client, process, CpuMeter(process, group))
    finally:
        if group is not None:
            group.remove()


def bastion_argv(bastion: Path, policy: Path) -> list[str]:
    """How the bench starts Bastion (the policy path also finds its process)."""
    return [str(bastion), "serve", "--policy", str(policy)]


def baseline_argv(logs: list[Path], feed: Path, tag: str) -> list[str]:
    """How the bench starts the baseline (`tag` is only there to find its process)."""
    return [sys.executable, str(BASELINE_SCRIPT), *[f"--log={log}" for log in logs], f"--feed={feed}", f"--tag={tag}"]


def bastion_session(
    bastion: Path, policy: Path, stderr_path: Path, timeout_s: float = 900
) -> AbstractAsyncContextManager[Session]:
    command, *args = bastion_argv(bastion, policy)
    return open_session("bastion", command, args, str(policy), stderr_path, timeout_s)


def baseline_session(
    logs: list[Path], feed: Path, stderr_path: Path, timeout_s: float = 900
) -> AbstractAsyncContextManager[Session]:
    tag = uuid.uuid4().hex
    command, *args = baseline_argv(logs, feed, tag)
    return open_session("baseline", command, args, tag, stderr_path, timeout_s)


async def timed_call(session: Session, tool: str, arguments: dict[str, Any], timeout_s: float | None = None) -> Timed:
    """One tools/call, timed end to end; bounded by timeout_s when given."""
    started = time.perf_counter()
    result = None
    with anyio.move_on_after(timeout_s) as scope:
        result = await session.client.call_tool(tool, arguments)
    return Timed(time.perf_counter() - started, result, scope.cancelled_caught)


# --- memory ------------------------------------------------------------------


def rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except psutil.Error:
        return 0


def worker_rss(broker: psutil.Process) -> int:
    """Largest RSS among the broker's worker processes (0 when none is alive)."""
    try:
        children = broker.children(recursive=True)
    except psutil.Error:
        return 0
    peak = 0
    for proc in children:
        try:
            if proc.name() == WORKER_NAME:
                peak = max(peak, proc.memory_info().rss)
        except psutil.Error:
            continue
    return peak


@dataclass
class PeakSampler:
    """Samples each probe every 20 ms in a thread (bounded by limit_s) and keeps the peaks."""

    probes: dict[str, Callable[[], int]]
    limit_s: float = 600
    peaks: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            for name, probe in self.probes.items():
                self.peaks[name] = max(self.peaks.get(name, 0), probe())
            self.samples += 1
            self._stop.wait(SAMPLE_INTERVAL_S)

    def __enter__(self) -> PeakSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def mib(self, name: str) -> float:
        return self.peaks.get(name, 0) / 2**20


# --- cleanup -----------------------------------------------------------------


def kill_descendants(grace_s: float = 3.0) -> int:
    """Terminate, then kill, whatever this process started that is still alive; returns how many."""
    try:
        left = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for proc in left:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(left)
