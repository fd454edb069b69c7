"""Worker kind "grep": search handed-over descriptors with GNU grep -E or ripgrep.

The broker picks the engine: ripgrep (2-4x faster on large logs) when the host
has it and the search has no context lines, GNU grep otherwise, and renders
the validated ERE for each (never the client's own text). Both print the same
"N:B:text" lines, parsed strictly below. "grep" in the rest of this module
means whichever engine runs.

The broker decides, per file, which engine searches it and whether it shares
the engine process of the file before it (a "joined" run: small files, since
an engine's start costs more than their scan). A lone plain file is the
engine's stdin, so no path is ever opened; a .gz rotation is decompressed
here, under a size cap shared by the whole call, and fed through a pipe; the
files of a joined run are fed one after the other through one pipe, and the
engine's line numbers and byte offsets mapped back to each file's own (the
sandbox has no /proc or /dev/fd, so an engine cannot be handed several
descriptors by name). Files are searched in the order the broker handed them
over (oldest first, or newest first for the most recent matches). The
pattern is passed with -e, so it can never be read as an option.

Without a time window grep stops by itself after max_lines + 1 matches (-m):
the extra match only tells whether more exist. With a window every match is
checked against it (workers/timestamps.py) and grep is killed once enough
matches are in. For the most recent matches a bounded deque keeps the last
max_lines + 1 of each file. Output is cut into capped lines, sanitized and sent
in batches. While an engine runs, the worker reports how far it has got
(workers/progress.py), woken by its poll's timeout when the engine is quiet.

This module runs the engines; what they read (stdin, decompression, joined
runs) is workers/search_input.py, and what the call and each file have found
is workers/search_state.py.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
from collections.abc import Iterator

from bastion_wire.protocol import Done, Failed, FileSkipped, ProtocolError, SearchFile, SearchRequest
from workers import engine_process
from workers.channel import Send
from workers.lines import LineSplitter
from workers.progress import ProgressMeter
from workers.sanitize import clean_text
from workers.search_input import READ_CHUNK, Feeder, Joined, contents, widen
from workers.search_state import Call, FileState, Hit, windowed

MAX_STDERR = 4096
PREFIX_ROOM = 48  # "line:offset:" before the text


RG_ENV = {"HOME": "/"}  # else ripgrep looks the user up through NSS (a socket to nscd)
# Bytes as they are, like grep: by default ripgrep transcodes a file that starts
# with a UTF-16 or UTF-8 byte-order mark, so whoever writes a log's first bytes
# could hide all of its lines from a large-file search.
RG_RAW_BYTES = ["--encoding", "none"]


def grep_argv(grep: str, engine: str, request: SearchRequest, limit: int | None, counts: bool = False) -> list[str]:
    """The engine's argv; `counts`: grep -c (a plain count over one file)."""
    if engine == "rg":
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
    if counts:
        argv.append("-c")
    elif request.context:
        argv += ["-C", str(request.context)]
    if limit is not None:
        argv += ["-m", str(limit)]
    if engine == "rg":
        return argv + ["-e", request.rg_pattern, "-"]
    return argv + ["-e", request.pattern]


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


# --- one engine process, over one file or several joined --------------------------------


class EngineRun:
    """One engine process over one file (the descriptor itself is its stdin, or the
    decompressed data of a .gz through a pipe) or over several joined ones (Joined)."""

    def __init__(self, call: Call, files: list[FileState], engine: str, path: str) -> None:
        self.call, self.files, self.engine, self.path = call, files, engine, path
        self.request = call.request
        self.joined = Joined(call, files) if len(files) > 1 else None
        self.current = 0  # the run's file the engine's output has reached
        self.stop = False
        self.count = 0
        # grep -c prints one number: only for a plain count over one file
        self.grep_counts = self.request.count_only and not windowed(self.request) and self.joined is None

    def limit(self) -> int | None:
        """-m: the matches still needed, plus one that says whether more exist (oldest first)."""
        first = self.files[0]
        first.begin()
        if self.request.count_only or first.windowed or (self.request.newest_first and not first.probe):
            return None
        return self.request.max_lines - self.call.matches + 1 + first.sent_matches

    def run(self) -> None:
        """Search the run's files; finished files are final. Raises EngineFailure or OSError
        when the engine died or its I/O failed; self.current is then the first unfinished file."""
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

    def _stdin(self) -> tuple[int, Feeder | None]:
        first = self.files[0]
        if self.joined is None and not first.spec.gzip:
            return first.fd, None
        in_r, in_w = os.pipe()
        if self.joined is not None:
            widen(in_w)
        chunks = self.joined.chunks() if self.joined is not None else contents(first, self.call)
        return in_r, Feeder(chunks, in_w)

    def _spawn(self) -> tuple[int, int, int, Feeder | None]:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdin, feeder = self._stdin()
        env = RG_ENV if self.engine == "rg" else {}
        argv = grep_argv(self.path, self.engine, self.request, self.limit(), self.grep_counts)
        try:
            pid = engine_process.start(self.path, argv, env, stdin, out_w, err_w)
        except OSError:  # e.g. EAGAIN at the process limit: its pipes must not pile up
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
            ready_fds = poller.poll(self.call.meter.wait_ms() if self.call.meter is not None else None)
            self.call.tick()
            for ready, _events in ready_fds:
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
                    return

    def _line(self, prefix: bytes, length: int) -> None:
        if self.grep_counts:
            number = prefix.split(b":")[-1]
            self.count = int(number) if number.isdigit() else 0
            return
        hit = _parse(prefix, length)
        at = self.current if hit is None or self.joined is None else self.joined.locate(hit)
        if at < self.current:
            raise ProtocolError("the search engine's output went back to an earlier file")
        while self.current < at:  # the output has moved on: the files before are complete
            self.files[self.current].finish()
            if self.call.more:  # that file's most recent matches filled the call, and one more
                self.stop = True
                return
            self.current += 1
        state = self.files[self.current]
        state.begin()
        self.stop = state.take(hit)

    def _finish(self, code: int, errors: bytes) -> None:
        if code not in (0, 1) and not self.stop and code != -signal.SIGPIPE:
            if code < 0:
                raise EngineFailure("engine_killed", signal.Signals(-code).name)
            raise EngineFailure("engine_error", clean_text(errors).strip()[:500] or f"{self.engine} exited with {code}")
        if self.grep_counts:
            self.files[0].count = self.count
        if self.stop:  # the call is answered: the files after this one are not searched
            self.files[self.current].finish()
            return
        for state in self.files[self.current :]:
            state.finish()
            if self.call.more:
                return
        self.current = len(self.files)


class EngineFailure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def engine_paths(executables: list[str]) -> dict[str, str]:
    """The engines this worker has: the profile's first executable is grep, ripgrep if listed."""
    paths = {"grep": executables[0]} if executables else {}
    rg = next((path for path in executables if os.path.basename(path) == "rg"), None)
    return paths | ({"rg": rg} if rg else {})


def _engine(request: SearchRequest, spec: SearchFile) -> str:
    return spec.engine or request.engine


def _refusal(request: SearchRequest, fds: list[int], engines: dict[str, str]) -> str | None:
    """Why this worker cannot run `request` as asked, if it cannot."""
    if len(fds) != len(request.files):
        return "one descriptor per file of the request is needed"
    for index, spec in enumerate(request.files):
        engine = _engine(request, spec)
        if engine not in engines or (engine == "rg" and (request.context or not request.rg_pattern)):
            return f"this worker cannot run {engine} for this request"
        if spec.join and not _joinable(request, index):
            return "a file joins an engine run that cannot take it"
    return None


def _joinable(request: SearchRequest, index: int) -> bool:
    """Whether file `index` may share the engine of the file before it: the same engine, and
    a search whose output the join keeps exact (no context lines, which would run across the
    files; no grep -c, which counts the whole stream)."""
    if index == 0 or request.context or (request.count_only and not windowed(request)):
        return False
    return _engine(request, request.files[index]) == _engine(request, request.files[index - 1])


def _runs(request: SearchRequest) -> Iterator[range]:
    """The files' indices, one range per engine process: a file that joins extends the run before."""
    start = 0
    for index in range(1, len(request.files) + 1):
        if index == len(request.files) or not request.files[index].join:
            yield range(start, index)
            start = index


def search(request: SearchRequest, fds: list[int], executables: list[str], send: Send) -> None:
    engines = engine_paths(executables)
    refusal = _refusal(request, fds, engines)
    if refusal is not None:
        send(Failed("bad_request", refusal))
        return
    call = Call(request, send, inflated=request.decompressed_before)
    states = [FileState(call, index, spec, fd) for index, (spec, fd) in enumerate(zip(request.files, fds, strict=True))]
    call.files, call.meter = states, ProgressMeter(fds, send, call.flush)
    try:
        for run in _runs(request):
            if call.more:
                break  # older (or newer) files are not searched: the answer is complete
            engine = _engine(request, request.files[run.start])
            _search_run(call, [states[index] for index in run], engine, engines[engine])
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


def _search_run(call: Call, files: list[FileState], engine: str, path: str) -> None:
    """One engine over `files`. If it dies part-way, the files it had not finished are
    searched again one engine each (the first after the lines already sent), so a death
    costs the file that caused it only, as it would with an engine per file."""
    run = EngineRun(call, files, engine, path)
    if len(files) == 1:
        _search_one(call, run)
        return
    try:
        run.run()
    except EngineFailure as failure:
        if failure.code != "engine_killed" or failure.message == "SIGSYS":
            raise
    except OSError:
        pass
    else:
        return
    for state in files[run.current :]:
        if call.more:
            return
        state.reset(again=True)
        os.lseek(state.fd, 0, os.SEEK_SET)
        _search_one(call, EngineRun(call, [state], engine, path))


def _search_one(call: Call, run: EngineRun) -> None:
    """One file; an engine that a limit killed on it (a line too long for the memory
    limit, say), or an I/O error on it (ENOMEM at that limit, EIO), costs that file
    only. A seccomp kill (SIGSYS) still ends the call."""
    index = run.files[0].index
    try:
        run.run()
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
