"""Wire protocol between the broker and its workers.

Part of bastion_wire, with plan.py (the plan a worker is handed) and intel_db.py
(the compiled intel database's format): the only project code both sides import,
since the broker never imports workers/ and a worker never imports broker/
(tests/test_import_boundary.py). A frame is a 4-byte big-endian payload length
followed by one MessagePack-encoded message from the tagged unions below. Frames are capped at MAX_FRAME_BYTES; anything
malformed, oversized or of the wrong kind raises ProtocolError, and the broker
then kills the worker. The protocol version travels in the setup and ready
messages so a mismatched worker is refused before it sees a request.
"""

from __future__ import annotations

import struct
from typing import Annotated, Literal

import msgspec

# 2: a search's files carry their engine and whether they join the run before; 3: Progress;
# 4: JournalRequest, JournalEntries and Done.host_counts
PROTOCOL_VERSION = 4
MAX_FRAME_BYTES = 1 << 20
MAX_SEARCH_FILES = 32  # descriptors one search may carry (rotations, glob matches)
MAX_JOURNAL_FILES = 64  # journal files one journal worker reads (its profile's limits are sized for them)
MAX_JOURNAL_VALUES = 256  # values of one journal field filter (workers/journal_reader.py MAX_MATCH_VALUES)
MAX_LINE_BYTES = 1 << 16
HEADER = struct.Struct(">I")

# Failure codes a worker may report; anything else is a protocol violation.
# engine_killed: the program the worker ran died of a signal (named in message).
# bad_database: the intel database handed over is missing pieces, corrupt or of another format.
FailureCode = Literal[
    "bad_request", "bad_pattern", "bad_database", "engine_error", "engine_killed", "io_error", "too_large"
]


class ProtocolError(Exception):
    """A frame was malformed, oversized, unexpected or of another version."""


# --- broker -> worker -------------------------------------------------------


class Setup(msgspec.Struct, tag="setup", forbid_unknown_fields=True):
    """First frame: how to confine yourself. Sent before any untrusted input."""

    version: int
    kind: str
    plan: bytes  # msgpack-encoded sandbox plan (bastion_wire/plan.py)


class SearchFile(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """One handed-over descriptor of a search, in the order the fds arrive."""

    gzip: bool = False  # decompress in the worker (rotated .gz files)
    mtime: float = 0.0  # the file's modification time: the year of RFC 3164 stamps is inferred from it
    # The engine for this file (broker/tools/query_logs/engine.py choose); None: the request's.
    engine: Literal["grep", "rg"] | None = None
    # Searched by the same engine process as the file before it: the worker feeds both, one
    # after the other, into one engine's stdin and maps its line numbers and offsets back
    # (workers/search.py). Only for searches without context lines or a plain count.
    join: bool = False


class SearchRequest(msgspec.Struct, tag="search", forbid_unknown_fields=True):
    """Search the handed-over descriptors, in order, for a validated ERE."""

    # The validated pattern as the broker rendered it for grep -E (broker/tools/query_logs/engine.py
    # to_grep_ere, applied by choose): an engine never sees the client's own text.
    pattern: str
    max_lines: int
    max_line_bytes: int
    files: list[SearchFile] = msgspec.field(default_factory=lambda: [SearchFile()])
    ignore_case: bool = False
    context: Annotated[int, msgspec.Meta(ge=0, le=100)] = 0
    count_only: bool = False
    newest_first: bool = False  # the files arrive newest first; return the most recent matches
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None
    max_decompressed_bytes: int = 1 << 30
    # Bytes earlier batches of the same call decompressed: the cap above is per call,
    # and a search over more than MAX_SEARCH_FILES files runs in several workers.
    decompressed_before: Annotated[int, msgspec.Meta(ge=0)] = 0
    # "rg": run ripgrep with rg_pattern, the same validated pattern rendered for it
    # (broker/tools/query_logs/engine.py to_rust_regex); only without context lines.
    # The engine of every file that names none (SearchFile.engine).
    engine: Literal["grep", "rg"] = "grep"
    rg_pattern: str = ""


class TailRequest(msgspec.Struct, tag="tail", forbid_unknown_fields=True):
    """Return the last max_bytes of the handed-over descriptor."""

    max_bytes: int
    max_line_bytes: int


class RunRequest(msgspec.Struct, tag="run", forbid_unknown_fields=True):
    """`bastion sandbox run` only: run a program or a Python payload confined.

    A worker accepts it only when its plan says allow_run, which the broker
    sets for `bastion sandbox run` and never for tool calls.
    """

    argv: list[str]
    python: str = ""


class IntelRequest(msgspec.Struct, tag="intel", forbid_unknown_fields=True):
    """Look one validated address up in the compiled intel database (the first
    descriptor); the next descriptors are the enrichment databases named in
    `enrich`, in that order."""

    packed: Annotated[bytes, msgspec.Meta(min_length=4, max_length=16)]  # 4 or 16 bytes, network order
    include_history: bool
    max_matches: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    enrich: list[Literal["asn", "country"]] = msgspec.field(default_factory=list)


_FilterValues = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=256)]], msgspec.Meta(max_length=MAX_JOURNAL_VALUES)
]
_Usec = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]  # microseconds since the epoch, UTC (msgspec: int64)


class JournalRequest(msgspec.Struct, tag="journal", forbid_unknown_fields=True):
    """Search the handed-over journal files (read as one journal) for a validated ERE on
    MESSAGE. The field filters are applied by the journal library: within one any value
    will do, an entry must pass all given; max_priority N keeps PRIORITY 0..N; the time
    window is inclusive."""

    # The validated pattern rendered for grep -E (broker/tools/query_logs/engine.py to_grep_ere).
    pattern: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)]  # matching entries returned at most
    # Of a message kept. At most 64 KiB (sanitised, up to 4x that): an entry always fits a
    # frame; the broker sends min(limits.max_line_bytes, MAX_LINE_BYTES).
    max_line_bytes: Annotated[int, msgspec.Meta(ge=64, le=MAX_LINE_BYTES)]
    units: _FilterValues = msgspec.field(default_factory=list)
    identifiers: _FilterValues = msgspec.field(default_factory=list)
    hostnames: _FilterValues = msgspec.field(default_factory=list)
    boots: _FilterValues = msgspec.field(default_factory=list)
    max_priority: Annotated[int, msgspec.Meta(ge=0, le=7)] | None = None
    since_usec: _Usec | None = None
    until_usec: _Usec | None = None
    order: Literal["oldest", "newest"] = "oldest"
    ignore_case: bool = False
    count_only: bool = False  # matching entries per _HOSTNAME (Done.host_counts), none sent


ToWorker = Setup | SearchRequest | TailRequest | RunRequest | IntelRequest | JournalRequest

# --- worker -> broker -------------------------------------------------------


class Ready(msgspec.Struct, tag="ready", forbid_unknown_fields=True):
    """The worker is confined and waiting for exactly one request."""

    version: int
    layers: list[str]


class SetupFailed(msgspec.Struct, tag="setup_failed", forbid_unknown_fields=True):
    """A sandbox layer could not be applied; the broker must not use this worker."""

    layer: str
    reason: str


class Line(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    line_no: Annotated[int, msgspec.Meta(ge=1)]  # a hostile engine's "0:" is a protocol error
    text: str
    file: Annotated[int, msgspec.Meta(ge=0)] = 0  # index into the request's files
    context: bool = False  # a context line around a match, not a match itself


class Lines(msgspec.Struct, tag="lines", forbid_unknown_fields=True):
    """A batch of matching lines, already sanitized, in file order."""

    lines: list[Line]


class Text(msgspec.Struct, tag="text", forbid_unknown_fields=True):
    """A chunk of sanitized text (resource reads)."""

    text: str


class FileSkipped(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """A file of a search whose engine died (other than by seccomp), or whose I/O failed:
    the search went on with the next file. Its lines sent so far stand; its count, if any, is meaningless."""

    file: Annotated[int, msgspec.Meta(ge=0)]  # index into the request's files
    # How the engine died (a signal, e.g. SIGKILL: the broker knows whether a limit did it)
    # or the errno of the I/O that failed (ENOMEM, EIO). Shown to the client, so held to
    # such a name: anything else is a protocol error.
    cause: Annotated[str, msgspec.Meta(pattern=r"^(SIG|E)[A-Z0-9]{1,15}$")]


class Progress(msgspec.Struct, tag="progress", forbid_unknown_fields=True):
    """How far a search has got, sent at a bounded rate (workers/progress.py) and only
    when it changed. Advisory: the broker clamps it to what it handed over and never lets
    what the client sees go back (broker/tools/query_logs/scan_progress.py)."""

    scanned: Annotated[int, msgspec.Meta(ge=0)]  # bytes of the handed-over files consumed so far
    files_done: Annotated[int, msgspec.Meta(ge=0)]  # files of the request searched to their end


class JournalEntry(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """One matching journal entry, its text fields sanitised (empty: the entry has none)."""

    time_usec: _Usec  # __REALTIME_TIMESTAMP
    host: str  # _HOSTNAME
    unit: str  # _SYSTEMD_UNIT
    identifier: str  # SYSLOG_IDENTIFIER
    pid: Annotated[int, msgspec.Meta(ge=1, le=1 << 22)] | None  # _PID
    priority: Annotated[int, msgspec.Meta(ge=0, le=7)] | None  # PRIORITY
    message: str  # MESSAGE, one line


class JournalEntries(msgspec.Struct, tag="journal_entries", forbid_unknown_fields=True):
    """A batch of matching entries, in the order asked for."""

    entries: list[JournalEntry]


class Done(msgspec.Struct, tag="done", forbid_unknown_fields=True):
    """The last frame of a successful call."""

    more: bool  # more matches (or bytes) existed beyond what was returned
    counts: list[int] | None = None  # count_only: matching lines per file
    notes: list[str] = msgspec.field(default_factory=list)  # e.g. a truncated gzip file, a decompression cap
    skipped: list[FileSkipped] = msgspec.field(default_factory=list)
    decompressed: Annotated[int, msgspec.Meta(ge=0)] = 0  # total for the call so far, decompressed_before included
    # A journal count_only: matching entries per _HOSTNAME ("" for entries without one).
    host_counts: dict[str, Annotated[int, msgspec.Meta(ge=0)]] | None = None


class Failed(msgspec.Struct, tag="failed", forbid_unknown_fields=True):
    """The call failed for a reason the worker could name."""

    code: FailureCode
    message: str


class FeedInfo(msgspec.Struct, forbid_unknown_fields=True):
    """One compiled feed, as recorded by `bastion intel compile`."""

    name: str
    category: str
    confidence: int
    source: str
    sha256: str
    entries: int
    malformed: int
    source_mtime: str  # ISO 8601 UTC: when the feed file was last written (its age)


class IntelMatch(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    feed: Annotated[int, msgspec.Meta(ge=0)]  # index into IntelReport.feeds
    prefix: str
    first_seen: int  # unix seconds: first compile that saw this entry
    last_seen: int  # unix seconds: last compile that saw it
    active: bool  # False: delisted since (history only)


class Enrichment(msgspec.Struct, forbid_unknown_fields=True):
    asn: int | None = None
    organization: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    country_name: str | None = None


class IntelReport(msgspec.Struct, tag="intel_report", forbid_unknown_fields=True):
    """The result of one intel lookup (followed by Done)."""

    compiled_at: str
    feeds: list[FeedInfo]
    matches: list[IntelMatch]
    enrichment: Enrichment
    notes: list[str] = msgspec.field(default_factory=list)  # e.g. an enrichment database that could not be read


FromWorker = Ready | SetupFailed | Lines | Text | Progress | IntelReport | JournalEntries | Done | Failed

# --- broker <-> launcher ----------------------------------------------------
# The launcher (workers/launcher.py) is a pre-imported process that forks new
# workers on request. It only ever hears from the broker, never from a client.


class Fork(msgspec.Struct, tag="fork", forbid_unknown_fields=True):
    """Start one worker on the socket descriptor that comes with this frame, born in the
    namespaces of its plan that only a new process can enter (the launcher picks them)."""

    namespaces: list[str] = msgspec.field(default_factory=list)  # the plan's, e.g. ["mount", "pid", ...]
    user_namespace: bool = False
    shared_net: bool = False  # born in the launcher's shared empty network namespace


class Forked(msgspec.Struct, tag="forked", forbid_unknown_fields=True):
    """The new worker's pid (a child of the broker), or why none was started."""

    pid: int = 0
    error: str = ""


_encoder = msgspec.msgpack.Encoder()


def encode_frame(message: msgspec.Struct) -> bytes:
    payload = _encoder.encode(message)
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return HEADER.pack(len(payload)) + payload


class FrameReader:
    """Incremental decoder: feed bytes as they arrive, get whole messages out."""

    def __init__(self, message_type: object, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._decoder = _decoder(message_type)
        self._max = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[msgspec.Struct]:
        self._buffer += data
        messages: list[msgspec.Struct] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max:
                raise ProtocolError(f"frame header announces {length} bytes (max {self._max})")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            try:
                messages.append(self._decoder.decode(payload))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ProtocolError(f"malformed frame: {exc}") from None
        return messages

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered (non-zero at EOF = truncated)."""
        return len(self._buffer)


_decoders: dict[object, msgspec.msgpack.Decoder[msgspec.Struct]] = {}


def _decoder(message_type: object) -> msgspec.msgpack.Decoder[msgspec.Struct]:
    """One decoder per message type: it holds no per-stream state, and building one builds
    msgspec's tables for every Struct in the type (~0.8 ms for ToWorker)."""
    if message_type not in _decoders:
        _decoders[message_type] = msgspec.msgpack.Decoder(message_type)
    return _decoders[message_type]


def to_worker_reader() -> FrameReader:
    return FrameReader(ToWorker)


def from_worker_reader() -> FrameReader:
    return FrameReader(FromWorker)


def to_launcher_reader() -> FrameReader:
    return FrameReader(Fork)


def from_launcher_reader() -> FrameReader:
    return FrameReader(Forked)


# Built at import, in the launcher too: a worker cloned from it inherits them ready instead
# of building them again on every start.
for _message_type in (ToWorker, FromWorker, Fork, Forked):
    _decoder(_message_type)
