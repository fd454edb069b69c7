"""What a grep worker's engine reads (workers/search.py).

A lone plain file is the engine's stdin itself. A .gz rotation is decompressed
here, under a size cap shared by the whole call, and fed through a pipe; the
files of a joined run are fed one after the other through one pipe (Joined),
which also maps the engine's line numbers and byte offsets back to each file's
own. The Feeder writes into the pipe without blocking the worker's read of
the engine's output.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import zlib
from collections.abc import Iterator

from bastion_wire.protocol import ProtocolError
from workers.search_state import Call, FileState, Hit

READ_CHUNK = 256 * 1024
GZIP_IN_CHUNK = 64 * 1024
GZIP_OUT_CHUNK = 256 * 1024
F_SETPIPE_SZ = 1031  # fcntl(2), Linux
JOINED_PIPE_BYTES = 1 << 20  # bench rotations case, 32 x 1 MB joined: 59 ms a call with 64 KiB pipes, 42 with 1 MiB


def _gunzip(fd: int, call: Call, name: str) -> Iterator[bytes]:
    """Decompressed chunks of a gzip file (several members allowed), within the call's cap."""
    inflater = zlib.decompressobj(wbits=31)
    in_member = False  # a member has begun and not ended: the file ends inside it
    while True:
        data = os.read(fd, GZIP_IN_CHUNK)
        if not data:
            if in_member:
                call.note(f"{name}: truncated gzip file; searched what could be decompressed")
            return
        while data:
            in_member = True
            try:
                out = inflater.decompress(data, GZIP_OUT_CHUNK)
            except zlib.error:
                call.note(f"{name}: corrupt gzip data; searched what came before it")
                return
            data = inflater.unconsumed_tail
            if inflater.eof:  # the next member, if any, starts in unused_data
                data, inflater, in_member = inflater.unused_data, zlib.decompressobj(wbits=31), False
            call.inflated += len(out)
            if call.inflated > call.request.max_decompressed_bytes:
                call.note(
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


class Joined:
    """Several files fed one after the other into one engine's stdin, through a pipe.

    Where each file starts in that stream (its byte offset and the lines before it) maps the
    engine's "N:B:" back to the file's own line and offset. A file that does not end with a
    newline gets one, so that its last line stays its own; the engine never outputs a line
    before it has read it, so a line's file is always known when the line arrives."""

    def __init__(self, call: Call, files: list[FileState]) -> None:
        self.call, self.files = call, files
        self.starts: list[int] = []
        self.lines_before: list[int] = []
        self.fed = 0
        self.newlines = 0

    def chunks(self) -> Iterator[bytes]:
        for state in self.files:
            self.starts.append(self.fed)
            self.lines_before.append(self.newlines)
            last = b"\n"
            for chunk in contents(state, self.call):
                self.fed += len(chunk)
                self.newlines += chunk.count(b"\n")
                last = chunk[-1:]
                yield chunk
            if last != b"\n":
                self.fed, self.newlines = self.fed + 1, self.newlines + 1
                yield b"\n"

    def locate(self, hit: Hit) -> int:
        """The run's file that holds `hit`, whose line and offset become that file's own."""
        at = bisect.bisect_right(self.starts, hit.offset) - 1
        if at < 0:
            raise ProtocolError("the search engine reported an offset before its input")
        hit.line_no -= self.lines_before[at]
        hit.offset -= self.starts[at]
        if hit.line_no < 1:
            raise ProtocolError("the search engine reported a line number that does not match its offset")
        return at


def contents(state: FileState, call: Call) -> Iterator[bytes]:
    """A file's bytes as the engine should see them: decompressed for .gz."""
    if state.spec.gzip:
        yield from _gunzip(state.fd, call, f"file #{state.index}")
        return
    while chunk := os.read(state.fd, READ_CHUNK):
        yield chunk


def widen(pipe_w: int) -> None:
    """A larger pipe for a joined run: fewer switches between the worker and the engine.
    Best effort: past the user's pipe quota the kernel refuses (EPERM), and 64 KiB will do."""
    try:
        fcntl.fcntl(pipe_w, F_SETPIPE_SZ, JOINED_PIPE_BYTES)
    except OSError:
        pass
