"""The compiled threat-intel database: its binary format and its reader.

Shared by the compiler (broker/intel/compile.py, which writes it) and the
sandboxed "intel" worker (which maps it from a handed-over descriptor and
looks up one address). Opening costs the same whatever the size of the
feeds: the file is mapped read-only and its tables are used in place through
`memoryview.cast`, never parsed or copied. Imports: stdlib and msgspec only.

Layout (little-endian; every section starts on an 8-byte boundary, directly
after the previous one, in this order; offsets are from the start of file):

  header      HEADER below: magic, format version, header size, file size,
              counts, (offset, length) of every section, a reserved zero,
              CRC-32 of the header and the metadata
  meta        msgpack DatabaseMeta (compile time, one FeedMeta per feed)
  v4_index    65537 u32: v4_index[p] = number of IPv4 intervals whose start
              is below p << 16, so the interval holding an address of /16 p
              starts in [v4_index[p] - 1, v4_index[p + 1])
  v4_start    u32 per IPv4 interval, ascending; intervals never overlap
  v4_end      u32 per IPv4 interval (inclusive)
  v4_member   u32 per IPv4 interval: word offset of its list in `members`
  v6_start_hi, v6_start_lo, v6_end_hi, v6_end_lo
              u64 per IPv6 interval: high and low halves of start and end
  v6_member   u32 per IPv6 interval
  members     u32 words: lists of [count, entry id...]; an entry list is
              ordered most specific prefix first, then by feed; intervals
              with the same entries share one list
  entries     ENTRY per (feed, network): feed index, version, prefix length,
              active flag, network (16 bytes big-endian, IPv4 in the last
              4), first_seen and last_seen (unix seconds)

Only the header and metadata are checked at open (bounds of every section,
consistency with the counts, a checksum). Table bodies are trusted to be
in range only as far as a lookup reaches: anything out of bounds there
raises IntelDatabaseError, never IndexError; a flipped byte in a body can
give a wrong answer but cannot read outside the mapping.
"""

from __future__ import annotations

import binascii
import functools
import mmap
import socket
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Literal

import msgspec

MAGIC = b"BSTNINT1"
FORMAT_VERSION = 1
ALIGN = 8
V4_BUCKETS = 1 << 16
MAX_V4 = (1 << 32) - 1
MAX_V6 = (1 << 128) - 1
MASK64 = (1 << 64) - 1

SECTIONS = (
    "meta",
    "v4_index",
    "v4_start",
    "v4_end",
    "v4_member",
    "v6_start_hi",
    "v6_start_lo",
    "v6_end_hi",
    "v6_end_lo",
    "v6_member",
    "members",
    "entries",
)
# magic, format version, header size, file size, entries, v4 intervals,
# v6 intervals, member words, (offset, length) per section, reserved (0),
# CRC-32 of everything before it and of the metadata.
HEADER = struct.Struct(f"<8sIIQQQQQ{2 * len(SECTIONS)}QII")
# feed index, version, prefix length, active, pad, network, first_seen, last_seen.
ENTRY = struct.Struct("<IBBBx16sQQ")
ENTRY_SIZE = ENTRY.size
MAX_COUNT = 1 << 32  # entry ids and word offsets are u32
# Lookup hot path: prebound, and an IPv4 view of ENTRY that skips the 12 zero bytes.
_unpack = ENTRY.unpack_from
_unpack_v4 = struct.Struct("<IBBBx12x4sQQ").unpack_from
# Per version: how an entry is unpacked, its longest prefix, how its network is written.
_ENTRY_FORMAT: dict[int, tuple[Callable[[memoryview, int], tuple[Any, ...]], int, Callable[[bytes], str]]] = {
    4: (_unpack_v4, 32, socket.inet_ntoa),
    6: (_unpack, 128, functools.partial(socket.inet_ntop, socket.AF_INET6)),
}
_CRC_AT = HEADER.size - 4  # the CRC is the header's last field

# Errors a damaged table body can provoke inside a lookup; all become IntelDatabaseError.
_BODY_ERRORS = (IndexError, ValueError, OverflowError, struct.error)


class IntelDatabaseError(Exception):
    """The database is missing, truncated, corrupt or of another format version."""


class FeedMeta(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    category: str
    confidence: Annotated[int, msgspec.Meta(ge=0, le=100)]
    source: str
    sha256: str
    entries: Annotated[int, msgspec.Meta(ge=0)]
    malformed: Annotated[int, msgspec.Meta(ge=0)]
    source_mtime: str  # ISO 8601 UTC, e.g. 2026-11-24T10:00:00Z


class DatabaseMeta(msgspec.Struct, forbid_unknown_fields=True):
    compiled_at: str  # ISO 8601 UTC
    feeds: list[FeedMeta]


class Match(msgspec.Struct):
    feed: int  # index into meta.feeds
    prefix: str  # the listed network, e.g. "203.0.113.0/24"
    first_seen: int
    last_seen: int
    active: bool  # still listed at the last compile


def align(offset: int) -> int:
    return (offset + ALIGN - 1) // ALIGN * ALIGN


def section_lengths(meta_bytes: int, entries: int, v4: int, v6: int, words: int) -> list[int]:
    """Byte length of each section, in SECTIONS order, for these counts."""
    return [
        meta_bytes,
        4 * (V4_BUCKETS + 1),
        4 * v4,
        4 * v4,
        4 * v4,
        8 * v6,
        8 * v6,
        8 * v6,
        8 * v6,
        4 * v6,
        4 * words,
        ENTRY.size * entries,
    ]


def layout(lengths: list[int]) -> tuple[list[tuple[int, int]], int]:
    """(offset, length) per section, packed in order after the header, and the file size."""
    spans, offset = [], HEADER.size
    for length in lengths:
        spans.append((offset, length))
        offset = align(offset + length)
    return spans, offset


def header_crc(header_without_crc: bytes, meta: bytes | memoryview) -> int:
    return binascii.crc32(meta, binascii.crc32(header_without_crc))


def pack_header(file_size: int, counts: tuple[int, int, int, int], spans: list[tuple[int, int]], meta: bytes) -> bytes:
    """The header for a file laid out by layout(); its CRC covers header and metadata."""
    fields = [MAGIC, FORMAT_VERSION, HEADER.size, file_size, *counts, *(n for span in spans for n in span), 0]
    draft = HEADER.pack(*fields, 0)
    return HEADER.pack(*fields, header_crc(draft[:_CRC_AT], meta))


class IntelDatabase:
    """A mapped database. Use open_fd; close (or a with block) releases the mapping."""

    meta: DatabaseMeta

    def __init__(self, mapping: mmap.mmap) -> None:
        self._map = mapping
        self._views: list[memoryview] = []
        self._closed = False
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open_fd(cls, fd: int) -> IntelDatabase:
        """Map the database behind `fd` (which stays the caller's to close) and check its header."""
        if sys.byteorder != "little":
            raise IntelDatabaseError("the intel database reader needs a little-endian host")
        try:
            mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError, OverflowError) as exc:  # ValueError: an empty file
            raise IntelDatabaseError(f"cannot map the intel database: {exc}") from None
        return cls(mapping)

    def __enter__(self) -> IntelDatabase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- opening -------------------------------------------------------------

    def _load(self) -> None:
        size = len(self._map)
        if size < HEADER.size:
            raise IntelDatabaseError(f"intel database truncated: {size} bytes, shorter than its header")
        fields = HEADER.unpack_from(self._map, 0)
        magic, version, header_size, file_size = fields[:4]
        if magic != MAGIC:
            raise IntelDatabaseError("not a Bastion intel database (bad magic)")
        if version != FORMAT_VERSION:
            raise IntelDatabaseError(
                f"intel database format version {version}; this reader supports {FORMAT_VERSION}: recompile it"
            )
        if header_size != HEADER.size:
            raise IntelDatabaseError(f"intel database header size {header_size}, expected {HEADER.size}")
        if file_size != size:
            raise IntelDatabaseError(
                f"intel database truncated or extended: header says {file_size} bytes, file has {size}"
            )
        self._counts = fields[4:8]
        spans = self._check_layout(fields, size)
        if fields[-2] != 0:
            raise IntelDatabaseError("intel database header has a non-zero reserved field")
        self._check_crc(spans[0])
        self._bind(spans)

    def _check_layout(self, fields: tuple[int, ...], size: int) -> list[tuple[int, int]]:
        entries, v4, v6, words = self._counts
        if max(self._counts) >= MAX_COUNT:
            raise IntelDatabaseError("intel database counts out of range")
        raw = fields[8 : 8 + 2 * len(SECTIONS)]
        spans = [(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]
        # The layout is fully determined by the counts and the metadata size,
        # so recomputing it checks every offset, length and alignment at once.
        expected, end = layout(section_lengths(spans[0][1], entries, v4, v6, words))
        if spans != expected or end != size:
            raise IntelDatabaseError("intel database section table is inconsistent with its counts or size")
        return spans

    def _check_crc(self, meta_span: tuple[int, int]) -> None:
        stored = HEADER.unpack_from(self._map, 0)[-1]
        offset, length = meta_span
        with memoryview(self._map) as whole:
            actual = header_crc(bytes(whole[:_CRC_AT]), whole[offset : offset + length])
        if actual != stored:
            raise IntelDatabaseError("intel database header checksum mismatch (corrupt file)")

    def _bind(self, spans: list[tuple[int, int]]) -> None:
        view = dict(zip(SECTIONS, spans, strict=True))  # _check_layout: one span per section
        try:
            self.meta = msgspec.msgpack.decode(self._section(view["meta"], "B"), type=DatabaseMeta)
        except msgspec.MsgspecError as exc:
            raise IntelDatabaseError(f"intel database metadata unreadable: {exc}") from None
        self._n_feeds = len(self.meta.feeds)
        self._v4_index = self._section(view["v4_index"], "I")
        self._v4_start = self._section(view["v4_start"], "I")
        self._v4_end = self._section(view["v4_end"], "I")
        self._v4_member = self._section(view["v4_member"], "I")
        self._v6_start_hi = self._section(view["v6_start_hi"], "Q")
        self._v6_start_lo = self._section(view["v6_start_lo"], "Q")
        self._v6_end_hi = self._section(view["v6_end_hi"], "Q")
        self._v6_end_lo = self._section(view["v6_end_lo"], "Q")
        self._v6_member = self._section(view["v6_member"], "I")
        self._members = self._section(view["members"], "I")
        self._entries = self._section(view["entries"], "B")
        if self._v4_index[0] != 0 or self._v4_index[V4_BUCKETS] != self._counts[1]:
            raise IntelDatabaseError("intel database IPv4 index does not span its intervals")

    def _section(self, span: tuple[int, int], fmt: Literal["B", "I", "Q"]) -> memoryview:
        offset, length = span
        with memoryview(self._map) as whole:
            part = whole[offset : offset + length]
        cast = part.cast(fmt)  # lengths were checked to be whole items
        part.release()
        self._views.append(cast)
        return cast

    # --- lookups ---------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        entries, v4, v6, words = self._counts
        return {"entries": entries, "intervals_v4": v4, "intervals_v6": v6, "member_words": words}

    def lookup(self, version: int, value: int) -> list[Match]:
        """Every entry whose network holds the address, most specific first, then by feed."""
        if version == 4:
            if not 0 <= value <= MAX_V4:
                raise ValueError("IPv4 address out of range")
            try:
                bucket = value >> 16
                index = self._v4_index
                i = bisect_right(self._v4_start, value, index[bucket], index[bucket + 1]) - 1
                if i < 0 or value > self._v4_end[i]:
                    return []
                return self._matches(4, self._ids(self._v4_member[i]))
            except _BODY_ERRORS as exc:
                raise self._damaged(exc) from None
        if version == 6:
            if not 0 <= value <= MAX_V6:
                raise ValueError("IPv6 address out of range")
            try:
                return self._lookup_v6(value >> 64, value & MASK64)
            except _BODY_ERRORS as exc:
                raise self._damaged(exc) from None
        raise ValueError("version must be 4 or 6")

    def _lookup_v6(self, high: int, low: int) -> list[Match]:
        starts_hi = self._v6_start_hi
        after = bisect_right(starts_hi, high)
        i = after - 1
        if i >= 0 and starts_hi[i] == high:
            # Several intervals may share the high half: decide on the low one.
            first = bisect_left(starts_hi, high, 0, after)
            i = bisect_right(self._v6_start_lo, low, first, after) - 1
        if i < 0:
            return []
        end_hi = self._v6_end_hi[i]
        if high > end_hi or (high == end_hi and low > self._v6_end_lo[i]):
            return []
        return self._matches(6, self._ids(self._v6_member[i]))

    def _ids(self, offset: int) -> Sequence[int]:
        words = self._members
        count = words[offset]
        if count == 1:  # the usual case, without a slice
            return (words[offset + 1],)
        ids = words[offset + 1 : offset + 1 + count].tolist()
        if len(ids) != count:
            raise IntelDatabaseError("intel database membership list runs past its section")
        return ids

    def _matches(self, wanted: int, ids: Sequence[int]) -> list[Match]:
        unpack, longest, text = _ENTRY_FORMAT[wanted]
        entries, feeds, found = self._entries, self._n_feeds, []
        for entry in ids:
            feed, version, plen, active, network, first, last = unpack(entries, entry * ENTRY_SIZE)
            if version != wanted or plen > longest or feed >= feeds:
                raise IntelDatabaseError(f"intel database entry {entry} is inconsistent")
            found.append(Match(feed, f"{text(network)}/{plen}", first, last, active != 0))
        return found

    def _damaged(self, exc: Exception) -> IntelDatabaseError:
        if self._closed:
            return IntelDatabaseError("intel database is closed")
        return IntelDatabaseError(f"intel database table damaged ({type(exc).__name__}: {exc})")

    # --- whole-table access (the compiler's history) ------------------------------

    def entries(self) -> Iterator[tuple[int, int, int, int, bool, int, int]]:
        """(feed, version, network int, prefix length, active, first_seen, last_seen) per entry, checked.

        Reads the table a column at a time through strided views (a million
        entries in well under a second); each record is then checked, since
        the compiler carries these values into the next database.
        """
        columns = self._entry_columns()
        feeds = self._n_feeds
        for number, (feed, flags, c0, c1, c2, c3, first, last) in enumerate(zip(*columns, strict=True)):
            version, plen = flags & 0xFF, flags >> 8 & 0xFF
            value = c0 << 96 | c1 << 64 | c2 << 32 | c3
            bits = 32 if version == 4 else 128
            if (
                version not in (4, 6)
                or feed >= feeds
                or plen > bits
                or value >> bits
                or value & ((1 << (bits - plen)) - 1)
            ):
                raise IntelDatabaseError(f"intel database entry {number} is inconsistent")
            yield feed, version, value, plen, flags >> 16 & 0xFF != 0, first, last

    def _entry_columns(self) -> list[list[int]]:
        """feed, flags (version | prefix << 8 | active << 16), the network's four big-endian words, first, last."""
        words, quads = self._entries.cast("I"), self._entries.cast("Q")  # 10 words, 5 quads per record
        try:
            columns = [words[0::10].tolist(), words[1::10].tolist()]
            for chunk in range(2, 6):
                column = array("I", words[chunk::10])
                column.byteswap()  # stored big-endian, read little-endian
                columns.append(column.tolist())
            return columns + [quads[3::5].tolist(), quads[4::5].tolist()]
        finally:
            words.release()
            quads.release()

    def close(self) -> None:
        """Release the views, then the mapping. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            for view in self._views:
                view.release()
            self._map.close()
        except BufferError:
            pass  # a caller still holds a slice; the mapping goes when it does
        self._views.clear()
