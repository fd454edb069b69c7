"""What a grep worker's call has found, and each file's share of it (workers/search.py).

Call: the matches, counts, notes and skipped files across the whole call, and
the batches of lines on their way to the broker. FileState: one file's hits,
checked against the time window with the file's own clock, grouped, kept
(newest first) or sent, whichever engine run reads the file.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from bastion_wire.protocol import FileSkipped, Line, Lines, SearchFile, SearchRequest
from workers.channel import Send
from workers.progress import ProgressMeter
from workers.sanitize import clean_line
from workers.timestamps import LineClock

BATCH_LINES = 256
BATCH_BYTES = 256 * 1024
LOOK_BACK_BYTES = 64 * 1024


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
    files: list[FileState] = field(default_factory=list)
    meter: ProgressMeter | None = None

    def tick(self) -> None:
        """A progress report to the broker, if one is due (workers/progress.py)."""
        if self.meter is not None:
            self.meter.tick(sum(1 for state in self.files if state.finished) + len(self.skipped))

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

    def note(self, text: str) -> None:
        """A note for the client, once: a file searched again (after its joined run's
        engine died) may run into the same truncated or corrupt gzip data."""
        if text not in self.notes:
            self.notes.append(text)

    def flush(self) -> None:
        if self.batch:
            self.send(Lines(self.batch))
            self.batch, self.batch_bytes = [], 0


def windowed(request: SearchRequest) -> bool:
    return request.since is not None or request.until is not None


class FileState:
    """What one file's search has found, whichever engine run reads it: its hits, checked
    against the time window with the file's own clock, grouped, kept (newest first) or
    sent, and its count."""

    def __init__(self, call: Call, index: int, spec: SearchFile, fd: int) -> None:
        self.call, self.index, self.spec, self.fd = call, index, spec, fd
        self.request = call.request
        self.clock = LineClock(spec.mtime)
        self.windowed = windowed(self.request)  # decided once per file, not per line
        self.probe = False
        self.begun = False
        self.sent_through = 0  # the last line sent to the broker: a re-run of the file starts after it
        self.sent_matches = 0
        self.finished = False
        self.reset()

    def reset(self, again: bool = False) -> None:
        """Forget what a run found and did not send; `again`: the file is searched again,
        and its lines up to the last one sent are skipped (only then: an engine's output that
        repeats a line number, a hostile one's say, is still sent and counted)."""
        self.skip_through = self.sent_through if again else 0
        self.previous: tuple[int, float | None] = (0, None)  # (line_no, time) of the last output line
        self.group: list[Hit] = []
        self.kept: deque[list[Hit]] = deque()
        self.kept_matches = 0
        self.count = 0

    def begin(self) -> None:
        """The engine's output has reached this file: every file before it is finished."""
        if not self.begun:
            # Enough matches already: this file is only asked whether it holds one more.
            self.probe = self.call.full and not self.request.count_only
            self.begun = True

    def take(self, hit: Hit | None) -> bool:
        """One line of the engine's output (None: grep's group separator); True: stop the engine."""
        if hit is None:
            return self.close_group()
        if self.windowed and not self._in_window(hit):
            return False
        if hit.line_no <= self.skip_through:
            return False  # searched again: sent before the first run died
        if self.request.count_only:
            self.count += 1
            return False
        self.group.append(hit)
        return self.close_group() if not self.request.context else False

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

    def close_group(self) -> bool:
        """The group so far is complete: kept (newest first) or sent. True: the call is answered."""
        group, self.group = self.group, []
        matches = _matches(group)
        if not matches:
            return False
        if self.request.newest_first and not self.probe:
            # Keep the last (still needed + 1) matches: the one extra says whether more exist.
            self.kept.append(group)
            self.kept_matches += matches
            needed = self.request.max_lines - self.call.matches + 1
            while self.kept and self.kept_matches - _matches(self.kept[0]) >= needed:
                self.kept_matches -= _matches(self.kept.popleft())
            return False
        before = self.call.matches
        self.call.emit(group, self.index)
        self.sent_through, self.sent_matches = group[-1].line_no, self.sent_matches + self.call.matches - before
        return self.call.more

    def finish(self) -> None:
        """The whole file was searched: its count, or its most recent matches, newest first."""
        if self.finished:
            return
        self.finished = True
        self.begin()
        self.close_group()
        if self.request.count_only:
            self.call.counts.append(self.count)
        elif self.request.newest_first and not self.probe:
            for group in reversed(self.kept):
                self.call.emit(group, self.index)


def _matches(group: list[Hit]) -> int:
    return sum(1 for hit in group if not hit.context)
