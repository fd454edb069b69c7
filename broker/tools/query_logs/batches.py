"""One search, run as as many worker batches as its files need.

A worker takes at most MAX_SEARCH_FILES descriptors (one request frame), so a
glob over a rsyslog collector's thousand hosts runs in batches, one worker
after the other, in the same worker slot. What the call may produce is shared
by the batches, never granted to each: each request asks only for the lines
still missing (max_lines), is handed the bytes already decompressed (the
decompression cap is per call), may send only the bytes still left
(max_output_bytes) and has only the time still left (timeout_s). Once a batch
reaches max_lines, or the output cap, no further worker starts.

A one-file search is one batch: nothing here adds work to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from bastion_wire.protocol import Line, SearchFile, SearchRequest
from broker.files.allowlist import OpenedLog, Skipped
from broker.pool.worker_process import WorkerResult


@dataclass
class Progress:
    """What the batches of one search have produced so far, files numbered across batches."""

    paths: list[str] = field(default_factory=list)  # files handed to workers, in search order
    compressed: list[bool] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    counts: list[int | None] = field(default_factory=list)  # count_only; None: that file's engine died
    notes: list[str] = field(default_factory=list)
    failed: list[Skipped] = field(default_factory=list)  # handed over, but the engine died on them
    matches: int = 0
    more: bool = False  # a worker saw a match beyond max_lines
    capped: bool = False  # max_output_bytes reached
    timed_out: list[str] = field(default_factory=list)  # chosen files the timeout left unsearched
    bytes_received: int = 0
    decompressed: int = 0
    workers: int = 0
    engines: set[str] = field(default_factory=set)  # run by any batch: the audit's "grep", "rg" or "grep+rg"
    earlier_cpu_s: float = 0.0  # of the workers before the last (stopped as soon as they replied)

    def full(self, request: SearchRequest) -> bool:
        return not request.count_only and self.matches >= request.max_lines

    def stopped(self, request: SearchRequest) -> bool:
        """No further worker may start: the answer is complete, or a call-wide limit is spent."""
        return self.capped or self.more or bool(self.timed_out) or self.full(request)


def batch_request(base: SearchRequest, files: list[OpenedLog], progress: Progress) -> SearchRequest:
    """The request for the next batch: the call's totals so far carried over."""
    specs = [SearchFile(gzip=log.gzip, mtime=log.mtime) for log in files]
    if not progress.workers:  # the first (usually the only) batch
        base.files = specs
        return base
    return msgspec.structs.replace(
        base,
        files=specs,
        max_lines=max(0, base.max_lines - progress.matches),
        decompressed_before=progress.decompressed,
        engine="grep",
        rg_pattern="",
    )


def absorb(
    progress: Progress, files: list[OpenedLog], result: WorkerResult, failed: dict[int, str], notes: list[str]
) -> None:
    """Fold a finished batch (outcome ok or output_capped) in. `failed`: the batch's file
    indices whose engine died, with why; `notes`: the worker's notes, already named."""
    offset = len(progress.paths)
    batch_lines = [line for line in result.lines if line.file < len(files)]
    if offset:
        for line in batch_lines:
            line.file += offset
    progress.lines += batch_lines
    progress.matches += sum(1 for line in batch_lines if not line.context)
    progress.paths += [log.path for log in files]
    progress.compressed += [log.gzip for log in files]
    counts = result.counts or []
    progress.counts += [
        None if index in failed or index >= len(counts) else counts[index] for index in range(len(files))
    ]
    progress.failed += [Skipped(files[index].path, why) for index, why in sorted(failed.items())]
    progress.notes += notes
    progress.more = progress.more or result.more
    progress.capped = progress.capped or result.outcome == "output_capped"
    progress.decompressed = max(progress.decompressed, result.decompressed)
