"""Lines of the MCP stdio stream, read without a helper thread.

The SDK's default stdin reader blocks a thread in readline(), which no
cancellation can interrupt: on SIGTERM the broker would wait for the client's
next message before it could stop. Waiting for readability on the event loop
keeps shutdown prompt. Regular files (stdin redirected from a file) cannot be
polled and never block for long, so they are read directly.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel

READ_BYTES = 65536
MAX_LINE_BYTES = 64 << 20  # a longer "line" is handed on as is and fails JSON validation


class StdinLines:
    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._pollable = not stat.S_ISREG(os.fstat(fd).st_mode)

    def __aiter__(self) -> AsyncIterator[str]:
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

    async def _lines(self) -> AsyncIterator[str]:
        buffer = bytearray()
        while True:
            chunk = await self._read()
            if chunk is None:
                continue
            if not chunk:
                if buffer.strip():
                    yield buffer.decode("utf-8", "replace")
                return
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0 or len(buffer) > MAX_LINE_BYTES:
                end = end if end >= 0 else len(buffer)
                line = bytes(buffer[: end + 1])
                del buffer[: end + 1]
                yield line.decode("utf-8", "replace")
