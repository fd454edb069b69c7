"""Start, feed, watch and reap sandboxed workers.

Each worker runs with an empty environment in its own session, as the broker's
own child, PID 1 of its own pid namespace. It is forked by the launcher, a
pre-imported interpreter the broker started (broker/pool/launcher.py and
workers/launcher.py): once for the pool in broker/pool/ready_workers.py, or for
one worker of `bastion sandbox run` and `bastion doctor` (spawn_one). It
confines itself (its profile's sandbox layers) *before* it reads anything
untrusted, says Ready, and then serves exactly one request; none is reused.

For a call the broker sends the request frame and the open log descriptor
(SCM_RIGHTS) over the worker's socket, then reads replies under a wall-clock
deadline and an output byte cap. Whatever happens, the worker's whole process
group is killed and the worker reaped (exit status, signal, rusage): before the
call returns, or, for a worker that sent its final reply and was left waiting
(Worker.call's stop_later), once the caller has sent the reply on.

The broker waits for the worker's socket and its pidfd at once (one epoll
set): the death of the worker ends the call as a crash even if a process it
started still held the channel open, and a worker found dead when the broker comes to stop it is recorded
with the signal that killed it, never as a normal stop.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import logging
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import msgspec

from bastion_wire.plan import Plan, encode_plan
from bastion_wire.protocol import (
    PROTOCOL_VERSION,
    Done,
    Failed,
    FileSkipped,
    FrameReader,
    IntelReport,
    JournalEntries,
    JournalEntry,
    Line,
    Lines,
    Progress,
    ProtocolError,
    Ready,
    Setup,
    SetupFailed,
    Text,
    encode_frame,
    from_worker_reader,
)
from broker.sandbox import cgroup
from broker.sandbox.cgroup import CgroupHost

log = logging.getLogger("bastion.dispatch")

SETUP_TIMEOUT_S = 10.0
REAP_TIMEOUT_S = 5.0
RECV_BYTES = 65536
# Progress frames a call may carry: twice the rate a worker keeps (workers/progress.py),
# plus slack. Past it the worker is treated as hostile (protocol_error): a flood of small
# frames must not keep the broker decoding and relaying for the whole deadline.
PROGRESS_FRAMES_PER_S = 8
PROGRESS_FRAMES_SLACK = 16
OnProgress = Callable[[Progress], Awaitable[None]]  # the newest report of each read from the socket


def progress_budget(deadline_s: float) -> int:
    return PROGRESS_FRAMES_SLACK + int(PROGRESS_FRAMES_PER_S * max(0.0, deadline_s))


class SandboxUnavailable(Exception):
    """A worker could not be confined as its profile requires: refuse to serve."""


@dataclass
class WorkerResult:
    """What one call produced and how the worker ended (for the reply and the audit)."""

    # ok | failed | timeout | output_capped | worker_crashed | protocol_error | cancelled
    outcome: str = "worker_crashed"
    lines: list[Line] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    more: bool = False
    failure: Failed | None = None
    intel: IntelReport | None = None
    counts: list[int] | None = None
    entries: list[JournalEntry] = field(default_factory=list)  # a journal search's matches
    host_counts: dict[str, int] | None = None  # a journal count_only: per _HOSTNAME
    notes: list[str] = field(default_factory=list)
    skipped: list[FileSkipped] = field(default_factory=list)  # engine died or I/O failed; the search went on
    decompressed: int = 0
    detail: str = ""
    bytes_received: int = 0
    progress_frames: int = 0
    exit_code: int | None = None
    signal: str | None = None
    stopped_after_reply: bool = False  # killed by the broker once its final reply had arrived (normal)
    reaped: bool = False  # False while a worker that sent its final reply is still to be stopped and reaped
    cpu_s: float = 0.0
    minor_faults: int = 0  # rusage ru_minflt of the worker and the descendants it reaped
    max_rss_kb: int = 0  # rusage: includes the size of the process it was forked from (the launcher)
    peak_memory_kb: int | None = None  # the worker's own cgroup peak (None without cgroups)


@functools.cache
def _import_paths() -> tuple[str, ...]:
    """Directories the worker needs on sys.path (it runs with -I -S: no site)."""
    # Located, not imported: the broker never imports worker code (tests/test_import_boundary.py).
    spec = importlib.util.find_spec("workers")
    if spec is None or spec.origin is None:
        raise ImportError("the workers package is missing from this installation")
    wanted = {Path(spec.origin).resolve().parent.parent, Path(msgspec.__file__).resolve().parent.parent}
    return tuple(str(path) for path in sorted(wanted))


class Worker:
    """One started worker process and the broker's end of its socket."""

    def __init__(
        self,
        kind: str,
        pid: int,
        sock: socket.socket,
        cgroups: CgroupHost,
        cgroup_dirs: list[str],
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.kind = kind
        self.pid = pid  # always the broker's child (started directly or by the launcher)
        self.proc = proc
        self.sock = sock
        self.cgroups = cgroups
        self.cgroup_dirs = cgroup_dirs
        self.pidfd = os.pidfd_open(pid)
        self._events = _socket_or_exit(sock, self.pidfd)
        self.reader: FrameReader = from_worker_reader()
        self.layers: list[str] = []
        self._reaped = False

    @property
    def reaped(self) -> bool:
        return self._reaped

    def exited(self) -> bool:
        return bool(select.select([self.pidfd], [], [], 0)[0])

    async def _receive(self) -> bytes | None:
        """The next bytes from the worker; b"" once the channel is closed, None once the
        process has exited (everything it sent read) while something still holds the channel."""
        while True:
            await anyio.wait_readable(self._events.fileno())
            try:
                return self.sock.recv(RECV_BYTES)
            except BlockingIOError:
                if self.exited():
                    return None
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

    async def call(
        self,
        request: msgspec.Struct,
        fd: int | list[int],
        deadline_s: float,
        max_bytes: int,
        result: WorkerResult | None = None,
        stop_later: bool = False,
        on_progress: OnProgress | None = None,
    ) -> WorkerResult:
        """Serve one request; `result` (filled in even if the call is cancelled) is returned.

        With stop_later, a worker that sent its final reply is left waiting (it
        blocks until its channel closes): the caller must `await finish(result)`
        once the reply is out. Tearing down a sandboxed process (its namespaces
        and mounts) costs ~1.5 ms of kernel CPU that would otherwise compete with
        sending the reply. Any other end (timeout, crash, garbage, cancellation)
        is killed and reaped before returning: the outcome depends on it.
        Progress frames, within progress_budget(deadline_s), go to `on_progress`."""
        result = result if result is not None else WorkerResult()
        try:
            self.hand_over(request, fd)
        except OSError as exc:
            result.detail = f"could not hand over the request: {exc}"
            await self.finish(result)
            return result
        try:
            with anyio.move_on_after(deadline_s) as scope:
                await self._read_replies(result, max_bytes, progress_budget(deadline_s), on_progress)
            if scope.cancelled_caught:
                result.outcome = "timeout"
        except anyio.get_cancelled_exc_class():
            result.outcome = "cancelled"  # the client cancelled or went away
            raise
        finally:
            if not (stop_later and result.outcome in ("ok", "failed")):
                await self.finish(result)  # shielded: the worker dies and is reaped even now
        return result

    def hand_over(self, request: msgspec.Struct, fd: int | list[int] | None) -> None:
        """Send the one request, with the descriptor(s) the worker may use."""
        fds = [] if fd is None else [fd] if isinstance(fd, int) else fd
        socket.send_fds(self.sock, [encode_frame(request)], fds)

    async def _read_replies(
        self, result: WorkerResult, max_bytes: int, max_progress: int, on_progress: OnProgress | None
    ) -> None:
        while True:
            data = await self._receive()
            if not data:
                result.detail = (
                    "worker closed its channel without a final reply"
                    if data == b""
                    else "worker exited without a final reply"
                )
                return
            result.bytes_received += len(data)
            try:
                messages = self.reader.feed(data)
                reports = _progress_frames(messages, result, max_progress)
                if self._absorb(messages, result):
                    return
            except ProtocolError as exc:
                result.outcome, result.detail = "protocol_error", str(exc)
                return
            if reports and on_progress is not None:
                await on_progress(reports[-1])  # only the newest counts: older ones are stale
            if result.bytes_received > max_bytes:
                result.outcome = "output_capped"
                return

    @staticmethod
    def _absorb(messages: list[msgspec.Struct], result: WorkerResult) -> bool:
        """Fold replies into the result; True once the final reply has arrived."""
        for message in messages:
            if isinstance(message, Lines):
                result.lines.extend(message.lines)
            elif isinstance(message, Progress):
                continue  # counted and relayed by _progress_frames
            elif isinstance(message, Text):
                result.text.append(message.text)
            elif isinstance(message, IntelReport) and result.intel is None:
                result.intel = message
            elif isinstance(message, JournalEntries):
                result.entries.extend(message.entries)
            elif isinstance(message, Done):
                result.outcome, result.more = "ok", message.more
                result.counts, result.notes = message.counts, message.notes
                result.skipped, result.decompressed = message.skipped, message.decompressed
                result.host_counts = message.host_counts
                return True
            elif isinstance(message, Failed):
                result.outcome, result.failure = "failed", message
                return True
            else:
                raise ProtocolError(f"unexpected {type(message).__name__} frame during a call")
        return False

    async def finish(self, result: WorkerResult | None = None) -> None:
        """Kill the worker's group and reap it.

        A worker that has sent its final reply has nothing left to do (it is
        single-use), so it is stopped at once rather than waited for."""
        with anyio.CancelScope(shield=True):
            # Dead before we stop it: whatever killed it was not our stop after the reply.
            replied = result is not None and result.outcome in ("ok", "failed") and not self.exited()
            self.kill()
            with anyio.move_on_after(REAP_TIMEOUT_S):
                await anyio.wait_readable(self.pidfd)
            await self._reap(result, replied)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    async def _reap(self, result: WorkerResult | None, replied: bool = False) -> None:
        if self._reaped:
            return
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:  # still dying (e.g. in uninterruptible I/O): block in a thread
            pid, status, usage = await anyio.to_thread.run_sync(os.wait4, self.pid, 0)
        self._reaped = True
        if result is not None:
            result.reaped = True
        self._events.close()
        self.sock.close()
        os.close(self.pidfd)
        peak = cgroup.peak_memory(self.cgroup_dirs)
        self.cgroups.discard(self.cgroup_dirs)
        if self.proc is not None:
            self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if result is None:
            return
        if replied and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            result.stopped_after_reply = True  # our SIGKILL, sent after the final reply
        elif os.WIFSIGNALED(status):
            result.signal = signal.Signals(os.WTERMSIG(status)).name
        else:
            result.exit_code = os.WEXITSTATUS(status)
        result.cpu_s = round(usage.ru_utime + usage.ru_stime, 4)
        result.minor_faults = usage.ru_minflt
        result.max_rss_kb = usage.ru_maxrss
        result.peak_memory_kb = peak // 1024 if peak is not None else None


def _progress_frames(messages: list[msgspec.Struct], result: WorkerResult, max_progress: int) -> list[Progress]:
    """The Progress frames among `messages`, counted against the call's budget."""
    reports = [message for message in messages if isinstance(message, Progress)]
    result.progress_frames += len(reports)
    if result.progress_frames > max_progress:
        raise ProtocolError(f"more than {max_progress} progress frames in one call")
    return reports


def _socket_or_exit(sock: socket.socket, pidfd: int) -> select.epoll:
    """One descriptor that is readable when the socket is, or the process has exited."""
    events = select.epoll(2)
    try:
        events.register(sock.fileno(), select.EPOLLIN)
        events.register(pidfd, select.EPOLLIN)
    except BaseException:
        events.close()
        raise
    return events


_worker_counter = itertools.count(1)


def worker_cgroup(plan: Plan, cgroups: CgroupHost) -> list[str]:
    """A new cgroup for one worker ([] without cgroups: its layer then fails or is skipped)."""
    if not cgroups.version:
        return []
    try:
        return cgroups.create(f"w{os.getpid()}-{next(_worker_counter)}", plan.cgroup_limits)
    except OSError as exc:
        log.error("cannot create a cgroup for a %s worker: %s", plan.kind, exc)
        return []


def python_argv(boot: str, channel_fd: int) -> list[str]:
    """How the broker starts a worker or the launcher: isolated mode, no site, empty sys.path but ours."""
    return [sys.executable, "-I", "-S", "-c", boot, str(channel_fd), str(os.getpid()), *_import_paths()]


def send_setup(worker: Worker, plan: Plan) -> Worker:
    worker.sock.setblocking(False)
    setup_plan = msgspec.structs.replace(plan, cgroup_dirs=worker.cgroup_dirs)
    worker.sock.sendall(encode_frame(Setup(version=PROTOCOL_VERSION, kind=plan.kind, plan=encode_plan(setup_plan))))
    return worker


async def start_worker(worker: Worker) -> Worker:
    """Wait until a spawned worker is confined; kill and reap it if it cannot be."""
    try:
        await worker.wait_ready()
    except BaseException:
        await worker.finish()
        raise
    return worker
