"""Lines of the MCP stdio stream, read without a helper thread.

The SDK's default stdin reader blocks a thread in readline(), which no
cancellation can interrupt: on SIGTERM the broker would wait for the client's
next message before it could stop. Waiting for readability on the event loop
keeps shutdown prompt. Regular files and character devices such as /dev/null
cannot be watched by epoll and never block for long, so they are read
directly.

Memory is bounded: a line longer than `max_bytes` is handed on cut to
max_bytes + 1 bytes (so that the caller can tell it was too long) and the
rest of it, up to the next newline, is skipped.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel

READ_BYTES = 65536


class StdinLines:
    def __init__(self, fd: int, max_bytes: int) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        mode = os.fstat(fd).st_mode
        self._pollable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._lines()

    async def _read(self) -> bytes | None:
        """The next chunk (b"" at end of input), or None after a spurious wake-up."""
        if self._pollable:
            await anyio.wait_readable(self.fd)
        else:
            await anyio.lowlevel.checkpoint()
        try:
            return os.read(self.fd, READ_BYTES)
        except BlockingIOError:
            return None

    async def _lines(self) -> AsyncIterator[bytes]:
        buffer = bytearray()
        searched = 0  # buffer[:searched] holds no newline
        skipping = False  # inside a line that was too long, until its newline
        while True:
            chunk = await self._read()
            if chunk is None:
                continue
            if not chunk:
                if buffer.strip() and not skipping:
                    yield bytes(buffer)
                return
            buffer += chunk
            while (end := buffer.find(b"\n", searched)) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                searched = 0
                if not skipping:
                    yield line
                skipping = False
            searched = len(buffer)
            if len(buffer) > self.max_bytes:
                if not skipping:
                    yield bytes(buffer[: self.max_bytes + 1])
                skipping = True
                buffer.clear()
                searched = 0
