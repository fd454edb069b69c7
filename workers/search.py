"""Worker kind "grep": search handed-over descriptors with GNU grep -E or ripgrep.

The broker picks the engine: ripgrep (2-4x faster on large logs) when the host
has it and the search has no context lines, GNU grep otherwise, and renders
the validated ERE for each (never the client's own text). Both print the same
"N:B:text" lines, parsed strictly below. "grep" in the rest of this module
means whichever engine runs.

One grep per file, in the order the broker handed the files over (oldest
first, or newest first for the most recent matches). A plain file is grep's
stdin, so no path is ever opened; a .gz rotation is decompressed here, under
a size cap shared by the whole call, and fed to grep through a pipe. The
pattern is passed with -e, so it can never be read as an option.

Without a time window grep stops by itself after max_lines + 1 matches (-m):
the extra match only tells whether more exist. With a window every match is
checked against it (workers/timestamps.py) and grep is killed once enough
matches are in. For the most recent matches a bounded deque keeps the last
max_lines + 1 of each file. Output is cut into capped lines, sanitized and sent
in batches.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from bastion_wire.protocol import Done, Failed, FileSkipped, Line, Lines, ProtocolError, SearchFile, SearchRequest
from workers import engine_process
from workers.channel import Send
from workers.lines import LineSplitter
from workers.sanitize import clean_line, clean_text
from workers.timestamps import LineClock

BATCH_LINES = 256
BATCH_BYTES = 256 * 1024
READ_CHUNK = 256 * 1024
GZIP_IN_CHUNK = 64 * 1024
GZIP_OUT_CHUNK = 256 * 1024
LOOK_BACK_BYTES = 64 * 1024
MAX_STDERR = 4096
PREFIX_ROOM = 48  # "line:offset:" before the text


@dataclass
class Hit:
    line_no: int
    offset: int
    context: bool
    text: bytes
    length: int


@dataclass
class Call:
    """What the whole call has produced so far, across files."""

    request: SearchRequest
    send: Send
    matches: int = 0
    more: bool = False
    counts: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inflated: int = 0  # decompressed bytes, across files (and earlier batches of the call)
    skipped: list[FileSkipped] = field(default_factory=list)
    batch: list[Line] = field(default_factory=list)
    batch_bytes: int = 0

    @property
    def full(self) -> bool:
        return self.matches >= self.request.max_lines

    def emit(self, group: list[Hit], file: int) -> None:
        """Send one group (matches and their context), stopping before a match beyond max_lines."""
        if self.full:
            self.more = True  # a group always holds a match: one more exists
            return
        for hit in group:
            if not hit.context:
                if self.full:
                    self.more = True
                    return
                self.matches += 1
            line = Line(hit.line_no, clean_line(hit.text[: self.request.max_line_bytes], hit.length), file, hit.context)
            self.batch.append(line)
            self.batch_bytes += len(line.text)
            if len(self.batch) >= BATCH_LINES or self.batch_bytes >= BATCH_BYTES:
                self.flush()

    def flush(self) -> None:
        if self.batch:
            self.send(Lines(self.batch))
            self.batch, self.batch_bytes = [], 0


RG_ENV = {"HOME": "/"}  # else ripgrep looks the user up through NSS (a socket to nscd)
# Bytes as they are, like grep: by default ripgrep transcodes a file that starts
# with a UTF-16 or UTF-8 byte-order mark, so whoever writes a log's first bytes
# could hide all of its lines from a large-file search.
RG_RAW_BYTES = ["--encoding", "none"]


def grep_argv(grep: str, request: SearchRequest, limit: int | None) -> list[str]:
    if request.engine == "rg":
        argv = [
            grep,
            "--no-config",
            "--threads=1",
            "--text",
            *RG_RAW_BYTES,
            "--line-number",
            "--byte-offset",
            "--color=never",
        ]
    else:
        argv = [grep, "-E", "-a", "-n", "-b"]
    if request.ignore_case:
        argv.append("-i")
    if request.count_only and not _windowed(request):
        argv.append("-c")
    elif request.context:
        argv += ["-C", str(request.context)]
    if limit is not None:
        argv += ["-m", str(limit)]
    if request.engine == "rg":
        return argv + ["-e", request.rg_pattern, "-"]
    return argv + ["-e", request.pattern]


def _windowed(request: SearchRequest) -> bool:
    return request.since is not None or request.until is not None


GREP_PREFIX = re.compile(rb"([0-9]{1,20})([:-])([0-9]{1,20})\2")


def _parse(prefix: bytes, length: int) -> Hit | None:
    """grep's 'N:B:text' (match) or 'N-B-text' (context); None for the '--' group separator.
    Anything else did not come from grep: the worker stops (ProtocolError) rather than guess."""
    if prefix == b"--" and length == 2:
        return None
    found = GREP_PREFIX.match(prefix)
    if found is None:
        raise ProtocolError("the search engine wrote output that is not grep -n -b output")
    start = found.end()
    return Hit(int(found.group(1)), int(found.group(3)), found.group(2) == b"-", prefix[start:], length - start)


# --- feeding grep ---------------------------------------------------------------------


def _gunzip(fd: int, call: Call, name: str) -> Iterator[bytes]:
    """Decompressed chunks of a gzip file (several members allowed), within the call's cap."""
    inflater = zlib.decompressobj(wbits=31)
    in_member = False  # a member has begun and not ended: the file ends inside it
    while True:
        data = os.read(fd, GZIP_IN_CHUNK)
        if not data:
            if in_member:
                call.notes.append(f"{name}: truncated gzip file; searched what could be decompressed")
            return
        while data:
            in_member = True
            try:
                out = inflater.decompress(data, GZIP_OUT_CHUNK)
            except zlib.error:
                call.notes.append(f"{name}: corrupt gzip data; searched what came before it")
                return
            data = inflater.unconsumed_tail
            if inflater.eof:  # the next member, if any, starts in unused_data
                data, inflater, in_member = inflater.unused_data, zlib.decompressobj(wbits=31), False
            call.inflated += len(out)
            if call.inflated > call.request.max_decompressed_bytes:
                call.notes.append(
                    f"{name}: stopped at the decompression cap of {call.request.max_decompressed_bytes}"
                    " bytes (a gzip bomb?)"
                )
                return
            if out:
                yield out


class Feeder:
    """Writes decompressed data into grep's stdin without blocking the reader."""

    def __init__(self, chunks: Iterator[bytes], pipe_w: int) -> None:
        self.chunks, self.fd, self.pending = chunks, pipe_w, b""
        os.set_blocking(pipe_w, False)

    def pump(self) -> bool:
        """Write what grep will take now; False once everything is written (pipe closed)."""
        while True:
            if not self.pending:
                self.pending = next(self.chunks, b"")
                if not self.pending:
                    os.close(self.fd)
                    return False
            try:
                written = os.write(self.fd, self.pending)
            except BlockingIOError:
                return True
            except BrokenPipeError:  # grep stopped reading (-m reached)
                os.close(self.fd)
                return False
            self.pending = self.pending[written:]


# --- one file ---------------------------------------------------------------------------


class FileSearch:
    def __init__(self, call: Call, index: int, spec: SearchFile, fd: int, grep: str) -> None:
        self.call, self.index, self.spec, self.fd, self.grep = call, index, spec, fd, grep
        self.request = call.request
        self.clock = LineClock(spec.mtime)
        self.previous: tuple[int, float | None] = (0, None)  # (line_no, time) of the last output line
        self.group: list[Hit] = []
        self.kept: deque[list[Hit]] = deque()
        self.kept_matches = 0
        self.count = 0
        self.stop = False
        # Enough matches already: this file is only asked whether it holds one more.
        self.probe = call.full and not self.request.count_only
        # Decided once per file, not per line of grep's output.
        self.windowed = _windowed(self.request)
        self.grep_counts = self.request.count_only and not self.windowed  # grep -c prints one number

    def limit(self) -> int | None:
        if self.request.count_only or self.windowed or (self.request.newest_first and not self.probe):
            return None
        return self.request.max_lines - self.call.matches + 1

    def run(self) -> None:
        pid, out_r, err_r, feeder = self._spawn()
        splitter = LineSplitter(self.request.max_line_bytes + PREFIX_ROOM)
        failure: OSError | None = None
        try:
            self._pump(out_r, feeder, splitter)
        except OSError as exc:  # e.g. ENOMEM at the memory limit: the engine is stopped and reaped first
            failure, self.stop = exc, True
        finally:
            if self.stop:
                os.kill(pid, signal.SIGKILL)
            if feeder is not None and feeder.fd >= 0:
                _close_quietly(feeder.fd)
            os.close(out_r)
        errors = os.read(err_r, MAX_STDERR)
        os.close(err_r)
        _, status = os.waitpid(pid, 0)
        if failure is not None:
            raise failure
        self._finish(os.waitstatus_to_exitcode(status), errors)

    def _spawn(self) -> tuple[int, int, int, Feeder | None]:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        feeder, stdin = None, self.fd
        if self.spec.gzip:
            in_r, in_w = os.pipe()
            feeder, stdin = Feeder(_gunzip(self.fd, self.call, f"file #{self.index}"), in_w), in_r
        env = RG_ENV if self.request.engine == "rg" else {}
        try:
            pid = engine_process.start(
                self.grep, grep_argv(self.grep, self.request, self.limit()), env, stdin, out_w, err_w
            )
        except OSError:  # e.g. EAGAIN at the process limit: this file is skipped, its pipes must not pile up
            for pipe_fd in (out_r, out_w, err_r, err_w, *((stdin, feeder.fd) if feeder is not None else ())):
                _close_quietly(pipe_fd)
            raise
        os.close(out_w)
        os.close(err_w)
        if feeder is not None:
            os.close(stdin)
        return pid, out_r, err_r, feeder

    def _pump(self, out_r: int, feeder: Feeder | None, splitter: LineSplitter) -> None:
        poller = select.poll()
        poller.register(out_r, select.POLLIN)
        if feeder is not None:
            poller.register(feeder.fd, select.POLLOUT)
        while not self.stop:
            for ready, _events in poller.poll():
                if feeder is not None and ready == feeder.fd:
                    if not feeder.pump():
                        poller.unregister(ready)
                        feeder.fd = -1
                    continue
                chunk = os.read(out_r, READ_CHUNK)
                for prefix, length in splitter.feed(chunk) if chunk else splitter.finish():
                    self._line(prefix, length)
                    if self.stop:
                        return
                if not chunk:
                    self._close_group()
                    return

    # --- grep's output -----------------------------------------------------------------

    def _line(self, prefix: bytes, length: int) -> None:
        if self.grep_counts:
            number = prefix.split(b":")[-1]
            self.count = int(number) if number.isdigit() else 0
            return
        hit = _parse(prefix, length)
        if hit is None:
            self._close_group()
            return
        if self.windowed and not self._in_window(hit):
            return
        if self.request.count_only:
            self.count += 1
            return
        if not self.request.context:
            self.group.append(hit)
            self._close_group()
            return
        self.group.append(hit)

    def _in_window(self, hit: Hit) -> bool:
        when = self.clock.time_of(hit.text)
        if when is None:
            previous_no, previous_time = self.previous
            when = previous_time if previous_no == hit.line_no - 1 else self._look_back(hit.offset)
        self.previous = (hit.line_no, when)
        if when is None:
            return False
        since, until = self.request.since, self.request.until
        return (since is None or when >= since) and (until is None or when <= until)

    def _look_back(self, offset: int) -> float | None:
        """The time of the nearest earlier stamped line (plain files only: .gz cannot seek)."""
        if self.spec.gzip or offset <= 0:
            return None
        start = max(0, offset - LOOK_BACK_BYTES)
        return self.clock.last_time_before(os.pread(self.fd, offset - start, start), partial_first=start > 0)

    def _close_group(self) -> None:
        group, self.group = self.group, []
        matches = sum(1 for hit in group if not hit.context)
        if not matches:
            return
        if self.request.newest_first and not self.probe:
            # Keep the last (still needed + 1) matches: the one extra says whether more exist.
            self.kept.append(group)
            self.kept_matches += matches
            needed = self.request.max_lines - self.call.matches + 1
            while self.kept and self.kept_matches - _matches(self.kept[0]) >= needed:
                self.kept_matches -= _matches(self.kept.popleft())
            return
        self.call.emit(group, self.index)
        if self.call.more:
            self.stop = True

    def _finish(self, code: int, errors: bytes) -> None:
        if code not in (0, 1) and not self.stop and code != -signal.SIGPIPE:
            if code < 0:
                raise EngineFailure("engine_killed", signal.Signals(-code).name)
            raise EngineFailure(
                "engine_error", clean_text(errors).strip()[:500] or f"{self.request.engine} exited with {code}"
            )
        if self.request.count_only:
            self.call.counts.append(self.count)
        elif self.request.newest_first and not self.probe:
            for group in reversed(self.kept):
                self.call.emit(group, self.index)


def _matches(group: list[Hit]) -> int:
    return sum(1 for hit in group if not hit.context)


class EngineFailure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def engine_path(request: SearchRequest, executables: list[str]) -> str | None:
    """The engine's executable: the profile's first for grep, ripgrep if the worker has it."""
    if request.engine != "rg":
        return executables[0] if executables else None
    return next((path for path in executables if os.path.basename(path) == "rg"), None)


def search(request: SearchRequest, fds: list[int], executables: list[str], send: Send) -> None:
    if len(fds) != len(request.files):
        send(Failed("bad_request", "one descriptor per file of the request is needed"))
        return
    grep = engine_path(request, executables)
    if grep is None or (request.engine == "rg" and (request.context or not request.rg_pattern)):
        send(Failed("bad_request", f"this worker cannot run {request.engine} for this request"))
        return
    call = Call(request, send, inflated=request.decompressed_before)
    try:
        for index, (spec, fd) in enumerate(zip(request.files, fds, strict=True)):
            if call.more:
                break  # older (or newer) files are not searched: the answer is complete
            _search_one(call, index, spec, fd, grep)
    except EngineFailure as failure:
        call.flush()
        send(Failed(failure.code, failure.message))  # type: ignore[arg-type]
        return
    finally:
        for fd in fds:
            _close_quietly(fd)
    call.flush()
    send(
        Done(
            more=call.more,
            counts=call.counts if request.count_only else None,
            notes=call.notes,
            skipped=call.skipped,
            decompressed=call.inflated,
        )
    )


def _search_one(call: Call, index: int, spec: SearchFile, fd: int, grep: str) -> None:
    """One file; an engine that a limit killed on it (a line too long for the memory
    limit, say), or an I/O error on it (ENOMEM at that limit, EIO), costs that file
    only. A seccomp kill (SIGSYS) still ends the call."""
    try:
        FileSearch(call, index, spec, fd, grep).run()
    except EngineFailure as failure:
        if failure.code != "engine_killed" or failure.message == "SIGSYS":
            raise
        _skip(call, index, failure.message)
    except OSError as exc:
        _skip(call, index, errno.errorcode.get(exc.errno or 0, "EIO"))


def _skip(call: Call, index: int, cause: str) -> None:
    call.skipped.append(FileSkipped(index, cause))
    if call.request.count_only:
        call.counts.append(0)  # keeps counts aligned with files; the broker reports none for it
