"""Start, feed, watch and reap sandboxed workers.

Each worker is a fresh interpreter started with an empty environment in its
own session. It confines itself (its profile's sandbox layers) *before* it
reads anything untrusted, says Ready, and then serves exactly one request.
A few ready workers per kind are kept waiting so the start-up and sandbox
cost is paid between calls rather than during one; none is ever reused.

For a call the broker sends the request frame and the open log descriptor
(SCM_RIGHTS) over the worker's socket, then reads replies under a wall-clock
deadline and an output byte cap. Whatever happens, the worker's whole process
group is killed and the worker reaped (exit status, signal, rusage) before
the call returns.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import select
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import msgspec

import workers
from broker.sandbox import cgroup
from broker.sandbox.cgroup import CgroupHost
from broker.sandbox.plan import Plan, encode_plan
from workers.protocol import (
    PROTOCOL_VERSION,
    Done,
    Failed,
    FrameReader,
    IntelReport,
    Line,
    Lines,
    ProtocolError,
    Ready,
    Setup,
    SetupFailed,
    Text,
    encode_frame,
    from_worker_reader,
)

log = logging.getLogger("bastion.dispatch")

BOOT = "import sys; sys.path[:0] = sys.argv[3:]; from workers.main import main; sys.exit(main(sys.argv[1:3]))"
SETUP_TIMEOUT_S = 10.0
EXIT_GRACE_S = 1.0
REAP_TIMEOUT_S = 5.0
RECV_BYTES = 65536


class SandboxUnavailable(Exception):
    """A worker could not be confined as its profile requires: refuse to serve."""


@dataclass
class WorkerResult:
    """What one call produced and how the worker ended (for the reply and the audit)."""

    outcome: str = "worker_crashed"  # ok | failed | timeout | output_capped | worker_crashed | protocol_error | cancelled
    lines: list[Line] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    more: bool = False
    failure: Failed | None = None
    intel: IntelReport | None = None
    counts: list[int] | None = None
    notes: list[str] = field(default_factory=list)
    detail: str = ""
    bytes_received: int = 0
    exit_code: int | None = None
    signal: str | None = None
    cpu_s: float = 0.0
    max_rss_kb: int = 0  # rusage: includes the broker's size, which the child inherits at spawn
    peak_memory_kb: int | None = None  # the worker's own cgroup peak (None without cgroups)


@functools.cache
def _import_paths() -> tuple[str, ...]:
    """Directories the worker needs on sys.path (it runs with -I -S: no site)."""
    wanted = {Path(workers.__file__).resolve().parent.parent, Path(msgspec.__file__).resolve().parent.parent}
    return tuple(str(path) for path in sorted(wanted))


class Worker:
    """One started worker process and the broker's end of its socket."""

    def __init__(self, kind: str, proc: subprocess.Popen[bytes], sock: socket.socket, cgroup_dirs: list[str]) -> None:
        self.kind = kind
        self.proc = proc
        self.sock = sock
        self.cgroup_dirs = cgroup_dirs
        self.pidfd = os.pidfd_open(proc.pid)
        self.reader: FrameReader = from_worker_reader()
        self.layers: list[str] = []
        self._reaped = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> bool:
        return bool(select.select([self.pidfd], [], [], 0)[0])

    async def _receive(self) -> bytes:
        while True:
            await anyio.wait_readable(self.sock)
            try:
                return self.sock.recv(RECV_BYTES)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return b""

    async def wait_ready(self) -> None:
        with anyio.move_on_after(SETUP_TIMEOUT_S):
            while True:
                data = await self._receive()
                if not data:
                    raise SandboxUnavailable(f"{self.kind} worker exited during sandbox set-up")
                for message in self.reader.feed(data):
                    if isinstance(message, SetupFailed):
                        raise SandboxUnavailable(f"sandbox layer {message.layer!r} failed: {message.reason}")
                    if not isinstance(message, Ready) or message.version != PROTOCOL_VERSION:
                        raise SandboxUnavailable(f"{self.kind} worker sent an unexpected set-up reply")
                    self.layers = message.layers
                    return
        raise SandboxUnavailable(f"{self.kind} worker did not finish sandbox set-up in time")

    async def call(self, request: msgspec.Struct, fd: int | list[int], deadline_s: float, max_bytes: int, result: WorkerResult | None = None) -> WorkerResult:
        """Serve one request; `result` (filled in even if the call is cancelled) is returned."""
        result = result if result is not None else WorkerResult()
        try:
            self.hand_over(request, fd)
        except OSError as exc:
            result.detail = f"could not hand over the request: {exc}"
            await self.finish(result)
            return result
        try:
            with anyio.move_on_after(deadline_s) as scope:
                await self._read_replies(result, max_bytes)
            if scope.cancelled_caught:
                result.outcome = "timeout"
        except anyio.get_cancelled_exc_class():
            result.outcome = "cancelled"  # the client cancelled or went away
            raise
        finally:
            await self.finish(result)  # shielded: the worker dies and is reaped even now
        return result

    def hand_over(self, request: msgspec.Struct, fd: int | list[int] | None) -> None:
        """Send the one request, with the descriptor(s) the worker may use."""
        fds = [] if fd is None else [fd] if isinstance(fd, int) else fd
        socket.send_fds(self.sock, [encode_frame(request)], fds)

    async def _read_replies(self, result: WorkerResult, max_bytes: int) -> None:
        while True:
            data = await self._receive()
            if not data:
                result.detail = "worker closed its channel without a final reply"
                return
            result.bytes_received += len(data)
            try:
                if self._absorb(self.reader.feed(data), result):
                    return
            except ProtocolError as exc:
                result.outcome, result.detail = "protocol_error", str(exc)
                return
            if result.bytes_received > max_bytes:
                result.outcome = "output_capped"
                return

    @staticmethod
    def _absorb(messages: list[msgspec.Struct], result: WorkerResult) -> bool:
        """Fold replies into the result; True once the final reply has arrived."""
        for message in messages:
            if isinstance(message, Lines):
                result.lines.extend(message.lines)
            elif isinstance(message, Text):
                result.text.append(message.text)
            elif isinstance(message, IntelReport) and result.intel is None:
                result.intel = message
            elif isinstance(message, Done):
                result.outcome, result.more = "ok", message.more
                result.counts, result.notes = message.counts, message.notes
                return True
            elif isinstance(message, Failed):
                result.outcome, result.failure = "failed", message
                return True
            else:
                raise ProtocolError(f"unexpected {type(message).__name__} frame during a call")
        return False

    async def finish(self, result: WorkerResult | None = None) -> None:
        """Let a finished worker exit briefly, then kill its group and reap it."""
        with anyio.CancelScope(shield=True):
            if result is not None and result.outcome in ("ok", "failed"):
                with anyio.move_on_after(EXIT_GRACE_S):
                    await anyio.wait_readable(self.pidfd)
            self.kill()
            with anyio.move_on_after(REAP_TIMEOUT_S):
                await anyio.wait_readable(self.pidfd)
            await self._reap(result)

    def kill(self) -> None:
        for send in (lambda: os.killpg(self.pid, signal.SIGKILL), lambda: signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)):
            try:
                send()
            except (ProcessLookupError, PermissionError):
                pass

    async def _reap(self, result: WorkerResult | None) -> None:
        if self._reaped:
            return
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:  # still dying (e.g. in uninterruptible I/O): block in a thread
            pid, status, usage = await anyio.to_thread.run_sync(os.wait4, self.pid, 0)
        self._reaped = True
        self.sock.close()
        os.close(self.pidfd)
        peak = cgroup.peak_memory(self.cgroup_dirs)
        cgroup.remove(self.cgroup_dirs)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if result is None:
            return
        if os.WIFSIGNALED(status):
            result.signal = signal.Signals(os.WTERMSIG(status)).name
        else:
            result.exit_code = os.WEXITSTATUS(status)
        result.cpu_s = round(usage.ru_utime + usage.ru_stime, 4)
        result.max_rss_kb = usage.ru_maxrss
        result.peak_memory_kb = peak // 1024 if peak is not None else None


class WorkerPool:
    """Ready, confined, single-use workers per kind, refilled in the background."""

    def __init__(self, plans: dict[str, Plan], cgroups: CgroupHost, prestart: int, worker_stderr: bool = False) -> None:
        self._plans = plans
        self._cgroups = cgroups
        self._prestart = prestart
        self._stderr = None if worker_stderr else subprocess.DEVNULL
        self._idle: dict[str, deque[Worker]] = {kind: deque() for kind in plans}
        self._starting: dict[str, int] = {kind: 0 for kind in plans}
        self._closed = False
        self._task_group: anyio.abc.TaskGroup | None = None
        self.layers: dict[str, list[str]] = {}

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start one worker of every kind now; raise SandboxUnavailable if any cannot be confined."""
        self._task_group = task_group
        for kind in self._plans:
            worker = await self._start_worker(kind)
            self.layers[kind] = worker.layers
            self._idle[kind].append(worker)
            self._refill(kind)

    def _spawn(self, kind: str) -> Worker:
        return spawn_worker(self._plans[kind], self._cgroups, stderr=self._stderr)

    async def _start_worker(self, kind: str) -> Worker:
        return await start_worker(self._spawn(kind))

    def _refill(self, kind: str) -> None:
        if self._closed:
            return
        missing = self._prestart - len(self._idle[kind]) - self._starting[kind]
        for _ in range(max(0, missing)):
            if self._task_group is not None:
                self._starting[kind] += 1
                self._task_group.start_soon(self._refill_one, kind)

    async def _refill_one(self, kind: str) -> None:
        try:
            worker = await self._start_worker(kind)
            if self._closed:
                await worker.finish()
            else:
                self._idle[kind].append(worker)
        except SandboxUnavailable as exc:
            log.error("could not start a %s worker: %s", kind, exc)
        finally:
            self._starting[kind] -= 1

    async def acquire(self, kind: str) -> Worker:
        """A ready worker of this kind, used by nobody before and never again after."""
        idle = self._idle[kind]
        while idle:
            worker = idle.popleft()
            if not worker.exited():
                self._refill(kind)
                return worker
            await worker.finish()
        self._refill(kind)
        return await self._start_worker(kind)

    async def close(self) -> None:
        """Stop refilling, let workers being started finish, kill and reap every idle one."""
        self._closed = True
        with anyio.move_on_after(SETUP_TIMEOUT_S + REAP_TIMEOUT_S):
            while any(self._starting.values()):
                await anyio.sleep(0.01)
        for idle in self._idle.values():
            while idle:
                await idle.popleft().finish()
        self._cgroups.close()


_worker_counter = itertools.count(1)


def spawn_worker(plan: Plan, cgroups: CgroupHost, stdout: int | None = subprocess.DEVNULL, stderr: int | None = subprocess.DEVNULL) -> Worker:
    """Start one worker process and send it its Setup; it confines itself next."""
    cgroup_dirs: list[str] = []
    if cgroups.version:
        try:
            cgroup_dirs = cgroups.create(f"w{os.getpid()}-{next(_worker_counter)}", plan.cgroup_limits)
        except OSError as exc:
            log.error("cannot create a cgroup for a %s worker: %s", plan.kind, exc)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        argv = [sys.executable, "-I", "-S", "-c", BOOT, str(child.fileno()), str(os.getpid()), *_import_paths()]
        proc = subprocess.Popen(
            argv,
            env={},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=stdout,  # DEVNULL while serving: never the MCP stdio stream
            stderr=stderr,
            pass_fds=(child.fileno(),),
            start_new_session=True,
        )
    except OSError:
        cgroup.remove(cgroup_dirs)
        parent.close()
        raise
    finally:
        child.close()
    parent.setblocking(False)
    worker = Worker(plan.kind, proc, parent, cgroup_dirs)
    setup_plan = msgspec.structs.replace(plan, cgroup_dirs=cgroup_dirs)
    parent.sendall(encode_frame(Setup(version=PROTOCOL_VERSION, kind=plan.kind, plan=encode_plan(setup_plan))))
    return worker


async def start_worker(worker: Worker) -> Worker:
    """Wait until a spawned worker is confined; kill and reap it if it cannot be."""
    try:
        await worker.wait_ready()
    except BaseException:
        await worker.finish()
        raise
    return worker
