"""Worker kind "journal": search handed-over journal files for a validated ERE on MESSAGE.

The entries are read with the real journal library (workers/journal_reader.py, loaded
before the worker confined itself), which applies the field filters and the time
window. Each entry's MESSAGE is sanitised into one line (workers/sanitize.py: a
newline in a message becomes a visible \\x0a) and fed to one GNU grep -E through a
pipe, so the engine is linear-time on attacker-written messages; grep's line numbers
map back to the entries. The pattern comes with -e, never readable as an option.

grep gets a second pattern matching only a sentinel line (a lone \\x01, which no
sanitised message holds), fed after every SENTINEL_EVERY entries. grep writes each
match at once (--line-buffered), so a sentinel's line number says that every entry
before it has been judged: those are forgotten, and the feeding pauses while more than
MAX_UNJUDGED sentinels are unanswered. The worker so holds a bounded number of entries
however many it reads. It stops at `limit` matches plus one (which says whether more
exist) and kills grep; count_only reads to the end and counts per _HOSTNAME. The
reader's notes (damaged or unreadable files) pass through to Done.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bastion_wire.protocol import (
    MAX_JOURNAL_FILES,
    Done,
    Failed,
    JournalEntries,
    JournalEntry,
    JournalRequest,
    ProtocolError,
)
from workers import engine_process, journal_reader
from workers.channel import Send
from workers.lines import LineSplitter
from workers.sanitize import clean_text

SENTINEL = b"\x01"
SENTINEL_EVERY = 512  # entries between two sentinel lines
MAX_UNJUDGED = 4  # sentinels fed and not yet answered before the feeding pauses
MAX_ENTRIES_READ = 1 << 40  # a bound on the reader's loop; the broker's deadline comes first
BATCH_ENTRIES = 200
BATCH_BYTES = 256 * 1024
READ_CHUNK = 64 * 1024
MAX_STDERR = 4096
PREFIX_ROOM = 32  # grep's "N:" is all that is kept of its output: the text is ours already
GREP_LINE = re.compile(rb"([0-9]{1,20}):")
FIELD_BYTES = 256  # of a host, unit or identifier name
# Hosts counted apart in a count_only (each name up to ~1 KiB sanitised: Done stays far
# below a frame's 1 MiB); a collector worker reads at most 64 files, a host each.
MAX_COUNTED_HOSTS = 512
# All a count needs of an entry: each field read is a lookup in the library (a third of
# the reading time for two fields instead of seven).
COUNT_FIELDS = ("MESSAGE", "_HOSTNAME")


def grep_argv(grep: str, request: JournalRequest) -> list[str]:
    argv = [grep, "-E", "-a", "-n", "--line-buffered"]
    if request.ignore_case:
        argv.append("-i")
    return [*argv, "-e", request.pattern, "-e", "^" + SENTINEL.decode() + "$"]


def filters(request: JournalRequest) -> journal_reader.Filters:
    """The reader's filters (raises ValueError for values it refuses)."""
    return journal_reader.Filters(
        units=tuple(request.units),
        identifiers=tuple(request.identifiers),
        hostnames=tuple(request.hostnames),
        boots=tuple(request.boots),
        max_priority=request.max_priority,
        since_usec=request.since_usec,
        until_usec=request.until_usec,
    )


def to_wire(entry: journal_reader.JournalEntry, max_line_bytes: int) -> JournalEntry:
    """The entry as the broker gets it: every text field sanitised, numbers checked."""
    fields = entry.fields
    message = clean_text(fields.get("MESSAGE", b"")[:max_line_bytes])
    if "MESSAGE" in entry.cut:
        message += f"…[message cut at {max_line_bytes} bytes]"
    return JournalEntry(
        time_usec=entry.realtime_usec,
        host=_name(fields.get("_HOSTNAME")),
        unit=_name(fields.get("_SYSTEMD_UNIT")),
        identifier=_name(fields.get("SYSLOG_IDENTIFIER")),
        pid=_number(fields.get("_PID"), 1, 1 << 22),
        priority=_number(fields.get("PRIORITY"), 0, 7),
        message=message,
    )


def _name(value: bytes | None) -> str:
    return clean_text(value[:FIELD_BYTES]) if value else ""


def _number(value: bytes | None, low: int, high: int) -> int | None:
    # Whoever wrote the entry chose these bytes: only a plain number in range is one.
    if value is None or not value.isdigit() or len(value) > 8:
        return None
    number = int(value)
    return number if low <= number <= high else None


@dataclass
class Search:
    """One call: what was fed to grep and not yet judged, what matched, what was sent."""

    request: JournalRequest
    send: Send
    reader: journal_reader.JournalReader
    fed: int = 0  # lines written into grep's stdin so far (entries and sentinels)
    pending: dict[int, journal_reader.JournalEntry | str] = field(default_factory=dict)  # line -> entry, or host
    sentinels: list[int] = field(default_factory=list)  # their line numbers, unanswered
    matches: int = 0
    more: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    uncounted: int = 0  # count_only matches of hosts beyond MAX_COUNTED_HOSTS
    batch: list[JournalEntry] = field(default_factory=list)
    batch_bytes: int = 0

    def lines(self) -> Iterator[bytes]:
        """The lines to feed grep: one per entry read, a sentinel after every SENTINEL_EVERY."""
        order = self.request.order
        read = self.reader.entries(filters(self.request), order=order, limit=MAX_ENTRIES_READ)
        for count, entry in enumerate(read, start=1):
            self.fed += 1
            message = clean_text(entry.fields.get("MESSAGE", b"")[: self.request.max_line_bytes])
            kept = _name(entry.fields.get("_HOSTNAME")) if self.request.count_only else entry
            self.pending[self.fed] = kept
            line = message.encode() + b"\n"
            if count % SENTINEL_EVERY == 0:
                self.fed += 1
                self.sentinels.append(self.fed)
                line += SENTINEL + b"\n"
            yield line

    def paused(self) -> bool:
        return len(self.sentinels) > MAX_UNJUDGED

    def judged(self, line_no: int) -> None:
        """grep printed line `line_no`: a match, or a sentinel (everything before it judged)."""
        if self.sentinels and line_no == self.sentinels[0]:
            self.sentinels.pop(0)
            for number in [number for number in self.pending if number < line_no]:
                del self.pending[number]
            return
        kept = self.pending.pop(line_no, None)
        if kept is None:  # never fed, or already judged: not grep's -n output of what it read
            raise ProtocolError("grep reported a line it was not fed, or twice")
        if isinstance(kept, str):
            if kept in self.counts or len(self.counts) < MAX_COUNTED_HOSTS:
                self.counts[kept] += 1
            else:
                self.uncounted += 1
            return
        self.matches += 1
        if self.matches > self.request.limit:
            self.more = True
            return
        self._add(to_wire(kept, self.request.max_line_bytes))

    def _add(self, entry: JournalEntry) -> None:
        self.batch.append(entry)
        self.batch_bytes += len(entry.message) * 4 + 64 + len(entry.host) + len(entry.unit) + len(entry.identifier)
        if len(self.batch) >= BATCH_ENTRIES or self.batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.send(JournalEntries(self.batch))
            self.batch, self.batch_bytes = [], 0


def search_journal(request: JournalRequest, fds: list[int], executables: list[str], send: Send) -> None:
    """Serve one JournalRequest on `fds` (taken: closed when done) with grep at executables[0]."""
    refusal = _refusal(request, fds, executables)
    if refusal is not None:
        for fd in fds:
            os.close(fd)
        send(Failed("bad_request", refusal))
        return
    try:
        fields = COUNT_FIELDS if request.count_only else journal_reader.FIELDS
        with journal_reader.JournalReader(fds, fields=fields, max_field_bytes=request.max_line_bytes) as reader:
            search = Search(request, send, reader)
            failure = _run(search, executables[0])
            notes = reader.notes()
    except journal_reader.JournalError as error:  # the process's limits (ENOMEM, EMFILE): no file to blame
        send(Failed("io_error", f"the journal files could not be opened: {os.strerror(error.code)}"))
        return
    search.flush()
    if failure is not None:
        send(failure)
        return
    counts = dict(search.counts) if request.count_only else None
    if search.uncounted:
        notes.append(f"{search.uncounted} matching entries of more than {MAX_COUNTED_HOSTS} hosts not counted")
    send(Done(more=search.more, notes=notes, host_counts=counts))


def _refusal(request: JournalRequest, fds: list[int], executables: list[str]) -> str | None:
    if not executables:
        return "this worker has no engine"
    if not 0 < len(fds) <= MAX_JOURNAL_FILES:
        return f"a journal request needs 1..{MAX_JOURNAL_FILES} descriptors"
    try:
        filters(request)
    except ValueError as error:
        return str(error)
    return None


def _run(search: Search, grep: str) -> Failed | None:
    """grep over the entries' lines until the reader ends or enough matched."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = engine_process.start(grep, grep_argv(grep, search.request), {"LC_ALL": "C"}, in_r, out_w, err_w)
    except OSError as error:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        return Failed("engine_error", f"grep could not start: {os.strerror(error.errno or 0)}")
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    stopped = True  # until _pump returns: an exception must not leave grep waiting for input
    try:
        stopped = _pump(search, Feed(in_w, search.lines(), search.paused), out_r)
    finally:
        if stopped:
            os.kill(pid, signal.SIGKILL)
        os.close(out_r)
        errors = os.read(err_r, MAX_STDERR)
        os.close(err_r)
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if stopped or code in (0, 1):
        return None
    if code < 0:
        return Failed("engine_killed", signal.Signals(-code).name)
    return Failed("engine_error", clean_text(errors).strip()[:500] or f"grep exited with {code}")


class Feed:
    """grep's stdin: the lines written without blocking, paused while grep owes answers."""

    def __init__(self, fd: int, lines: Iterator[bytes], paused: Callable[[], bool]) -> None:
        self.fd, self.lines, self.pending, self.paused = fd, lines, b"", paused
        os.set_blocking(fd, False)

    def write(self) -> bool:
        """Write what grep takes now, up to a pause; False once all is written (the pipe is then closed)."""
        while True:
            if not self.pending:
                if self.paused():  # grep may read as fast as we write: never a full pipe to stop at
                    return True
                self.pending = b"".join(itertools.islice(self.lines, 64))
                if not self.pending:
                    self.close()
                    return False
            try:
                written = os.write(self.fd, self.pending)
            except BlockingIOError:
                return True
            except BrokenPipeError:  # grep is gone: its exit status says why
                self.close()
                return False
            self.pending = self.pending[written:]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _pump(search: Search, feed: Feed, out_r: int) -> bool:
    """Feed grep and read its output; True if stopped early (enough matches)."""
    try:
        return _loop(search, feed, out_r)
    finally:
        feed.close()


def _loop(search: Search, feed: Feed, out_r: int) -> bool:
    splitter = LineSplitter(PREFIX_ROOM)
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    poller.register(feed.fd, select.POLLOUT)
    while True:
        # Wait for grep's answers before reading on: only once every sentinel is written.
        if feed.fd >= 0:
            poller.modify(feed.fd, 0 if search.paused() and not feed.pending else select.POLLOUT)
        for ready, _events in poller.poll():
            if ready != out_r:
                if ready == feed.fd and not feed.write():
                    poller.unregister(ready)
                continue
            chunk = os.read(out_r, READ_CHUNK)
            for prefix, _length in splitter.feed(chunk) if chunk else splitter.finish():
                found = GREP_LINE.match(prefix)
                if found is None:
                    raise ProtocolError("grep wrote output that is not grep -n output")
                search.judged(int(found.group(1)))
                if search.more:
                    return True
            if not chunk:
                return False
