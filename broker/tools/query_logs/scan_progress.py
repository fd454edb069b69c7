"""What a client is told of how far a search has got: bytes of its files scanned, of their total.

The total is the sum of the files' sizes: fstat of each batch when the broker opens it, and
for the files of later batches, not opened yet, their size when the search listed them. A
worker reports how far it has got in its own batch (bastion_wire.protocol.Progress); it may
be compromised, so its numbers are only a hint: clamped to the bytes of the files it was
handed, added to the batches finished before it, and never allowed to make what the client
sees go back or past the total. A file that grew since it was listed makes the total grow
with it when its batch opens; the total never shrinks.
"""

from __future__ import annotations

from bastion_wire.protocol import Progress
from broker.tools.context import ProgressSink


class ScanProgress:
    def __init__(self, sink: ProgressSink, files: int) -> None:
        self._sink = sink
        self._files = files  # files chosen to be searched
        self.total = 0
        self._before = 0  # bytes of the batches already finished
        self._files_before = 0
        self._batch_bytes = 0
        self._batch_files = 0
        self.shown = 0
        self._files_shown = 0

    def start_batch(self, sizes: list[int], later_bytes: int) -> None:
        """A batch of files of these sizes is handed over; `later_bytes`: the listed sizes
        of the files still to come."""
        self._batch_bytes, self._batch_files = sum(sizes), len(sizes)
        self.total = max(self.total, self._before + self._batch_bytes + later_bytes)

    async def worker(self, frame: Progress) -> None:
        """The running batch's worker says how far it has got."""
        scanned = min(frame.scanned, self._batch_bytes)
        files = min(frame.files_done, self._batch_files)
        await self._show(self._before + scanned, self._files_before + files)

    async def batch_done(self) -> None:
        self._before += self._batch_bytes
        self._files_before += self._batch_files
        self._batch_bytes = self._batch_files = 0
        await self._show(self._before, self._files_before)

    async def _show(self, scanned: int, files: int) -> None:
        scanned = min(scanned, self.total)
        if scanned <= self.shown:
            return  # nothing new, or a step back (a worker that re-read a file, or lies)
        self.shown, self._files_shown = scanned, max(self._files_shown, min(files, self._files))
        await self._sink(scanned, self.total, f"{self._files_shown} of {self._files} files searched")
