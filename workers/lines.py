"""Split a byte stream into lines while holding at most one capped line in memory."""

from __future__ import annotations

from collections.abc import Iterator


class LineSplitter:
    """Feed chunks, get (kept_prefix, total_length) per complete line.

    A line longer than `keep` bytes is kept only up to `keep` bytes, so one
    huge line (an attacker can write a gigabyte without a newline) costs
    `keep` bytes of memory, not its length.
    """

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._current = bytearray()
        self._length = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, int]]:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            self._add(piece)
            if end < 0:
                return
            yield self._take()
            start = end + 1

    def finish(self) -> Iterator[tuple[bytes, int]]:
        """The last line, if the stream did not end with a newline."""
        if self._length:
            yield self._take()

    def _add(self, piece: bytes) -> None:
        room = self._keep - len(self._current)
        if room > 0:
            self._current += piece[:room]
        self._length += len(piece)

    def _take(self) -> tuple[bytes, int]:
        line = (bytes(self._current), self._length)
        self._current.clear()
        self._length = 0
        return line
