"""Compile threat-intel feeds into one database file (format: bastion_wire/intel_db.py).

An operator command, never in the request path. It reads every feed, keeps
each entry's history from the previous database, turns the (possibly
overlapping and nested) networks into disjoint address intervals, each with
the list of entries covering it, and replaces the output atomically.
The disjoint intervals are broker/intel/intervals.py's.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
import tempfile
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from bastion_wire.intel_db import (
    ENTRY,
    MASK64,
    MAX_COUNT,
    DatabaseMeta,
    FeedMeta,
    IntelDatabase,
    IntelDatabaseError,
    layout,
    pack_header,
    section_lengths,
)
from broker.audit.durable import remove_quietly, sync_directory
from broker.files.regular_file import open_regular
from broker.intel.feeds import MAX_FEED_BYTES, FeedFormat, ParsedFeed, parse_feed
from broker.intel.intervals import FEED_SHIFT, sweep, v4_index

DAY_S = 86400
FEED_MASK = (1 << FEED_SHIFT) - 1


@dataclass(frozen=True)
class FeedSource:
    name: str
    path: str
    fmt: FeedFormat
    category: str
    confidence: int
    column: int = 1
    header: bool = True
    delimiter: str = ","


@dataclass
class CompileReport:
    feeds: list[FeedMeta]
    entries: int
    active: int
    intervals_v4: int
    intervals_v6: int
    seconds: float
    malformed_examples: dict[str, list[str]]
    # Feeds in the previous database but no longer configured: their history was dropped.
    dropped_feeds: list[str] = field(default_factory=list)


@dataclass
class _Entries:
    """One version's entries, keyed as FEED_SHIFT describes: sorting the keys sorts by (start, prefix, feed)."""

    bits: int
    current: dict[int, int] = field(default_factory=dict)  # key -> first_seen; listed now
    history: dict[int, tuple[int, int]] = field(default_factory=dict)  # key -> (first_seen, last_seen); delisted


def compile_feeds(
    sources: list[FeedSource],
    output: str,
    previous: str | None = None,
    now: float | None = None,
    history_days: int = 365,
) -> CompileReport:
    """Compile `sources` into `output`, carrying history over from `previous`. All or nothing."""
    # Millions of tuples that all live until the end: the cyclic collector
    # would rescan them again and again (about 15% of the time) for nothing.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _compile(sources, output, previous, now, history_days)
    finally:
        if was_enabled:
            gc.enable()


def _compile(
    sources: list[FeedSource], output: str, previous: str | None, now: float | None, history_days: int
) -> CompileReport:
    started = time.perf_counter()
    if sys.byteorder != "little":
        raise ValueError("the intel database is little-endian and read in place: compile it on a little-endian host")
    now_s = int(time.time() if now is None else now)
    _check_sources(sources)
    metas: list[FeedMeta] = []
    parsed: list[ParsedFeed] = []
    for source in sources:  # every feed is read before anything is written
        meta, feed = _read_feed(source)
        metas.append(meta)
        parsed.append(feed)
    tables = {4: _Entries(32), 6: _Entries(128)}
    for index, feed in enumerate(parsed):
        _add_current(tables, index, feed, now_s)
    dropped = _merge_previous(tables, previous, [source.name for source in sources], now_s - history_days * DAY_S)
    entries, active, v4, v6 = _write(output, DatabaseMeta(compiled_at=_iso(now_s), feeds=metas), tables, now_s)
    examples = {
        source.name: feed.malformed_examples
        for source, feed in zip(sources, parsed, strict=True)
        if feed.malformed_examples
    }
    return CompileReport(metas, entries, active, v4, v6, time.perf_counter() - started, examples, dropped)


def _check_sources(sources: list[FeedSource]) -> None:
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise ValueError("feed names must be unique")
    for source in sources:
        if not 0 <= source.confidence <= 100:
            raise ValueError(f"feed {source.name}: confidence must be 0..100")


def _read_feed(source: FeedSource) -> tuple[FeedMeta, ParsedFeed]:
    with os.fdopen(open_regular(source.path), "rb") as handle:  # a FIFO must not stall the compile
        info = os.fstat(handle.fileno())
        if info.st_size > MAX_FEED_BYTES:
            raise ValueError(f"feed {source.name}: {source.path} is larger than {MAX_FEED_BYTES >> 20} MiB")
        data = handle.read(MAX_FEED_BYTES + 1)  # +1: a file that grew meanwhile is still refused
    try:
        parsed = parse_feed(data, source.fmt, source.column, source.header, source.delimiter)
    except ValueError as exc:
        raise ValueError(f"feed {source.name}: {exc}") from None
    meta = FeedMeta(
        name=source.name,
        category=source.category,
        confidence=source.confidence,
        source=source.path,
        sha256=hashlib.sha256(data).hexdigest(),
        entries=len(parsed.networks),
        malformed=parsed.malformed,
        source_mtime=_iso(info.st_mtime),
    )
    return meta, parsed


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- history ----------------------------------------------------------------


def _add_current(tables: dict[int, _Entries], index: int, feed: ParsedFeed, now: int) -> None:
    # Hot loop over every network of every feed: locals only.
    current4, current6 = tables[4].current, tables[6].current
    for version, value, plen in feed.networks:
        key = ((value << 8 | plen) << FEED_SHIFT) | index
        if version == 4:
            current4[key] = now
        else:
            current6[key] = now


def _merge_previous(tables: dict[int, _Entries], previous: str | None, names: list[str], cutoff: int) -> list[str]:
    """Carry history over from the previous database; return the feeds it had that are no longer configured.

    An entry listed again keeps its first_seen; one no longer listed stays,
    inactive with its last last_seen, until that is older than the cutoff.
    """
    if previous is None or not os.path.exists(previous):
        return []
    try:
        fd = open_regular(previous, follow_symlinks=False)  # we wrote it: a symlink there was planted
    except OSError as exc:
        raise _unreadable(previous, str(exc)) from None
    try:
        with IntelDatabase.open_fd(fd) as database:
            return _merge_entries(tables, database, names, cutoff)
    except IntelDatabaseError as exc:
        raise _unreadable(previous, str(exc)) from None
    finally:
        os.close(fd)


def _merge_entries(tables: dict[int, _Entries], database: IntelDatabase, names: list[str], cutoff: int) -> list[str]:
    position = {name: index for index, name in enumerate(names)}
    mapping = [position.get(feed.name, -1) for feed in database.meta.feeds]
    current = {4: tables[4].current, 6: tables[6].current}
    history = {4: tables[4].history, 6: tables[6].history}
    for feed, version, value, plen, _active, first, last in database.entries():
        index = mapping[feed]
        if index < 0:
            continue  # the feed was removed from the configuration: so is its history
        key = ((value << 8 | plen) << FEED_SHIFT) | index
        listed = current[version]
        if key in listed:
            listed[key] = first
        elif last >= cutoff:
            history[version][key] = (first, last)
    return [feed.name for feed, index in zip(database.meta.feeds, mapping, strict=True) if index < 0]


def _unreadable(path: str, reason: str) -> IntelDatabaseError:
    return IntelDatabaseError(
        f"the previous intel database {path} cannot be read ({reason}); its history would be lost. "
        "Move it away to start fresh without history, then compile again"
    )


# --- writing ----------------------------------------------------------------


def _write(output: str, meta: DatabaseMeta, tables: dict[int, _Entries], now: int) -> tuple[int, int, int, int]:
    """Build every section and replace `output`; return (entries, active, v4 intervals, v6 intervals)."""
    keys, first = {}, {}
    for version, entries in tables.items():
        keys[version], first[version] = _sorted_keys(entries)
    words: list[int] = []
    v4 = sweep(keys[4], 32, 0, words)
    v6 = sweep(keys[6], 128, len(keys[4]), words)
    total = len(keys[4]) + len(keys[6])
    if max(total, len(words)) >= MAX_COUNT:
        raise ValueError("too many entries for one intel database")
    sections: list[bytes | bytearray] = [
        msgspec.msgpack.encode(meta),
        _u32(v4_index(v4.starts)),
        _u32(v4.starts),
        _u32(v4.ends),
        _u32(v4.members),
        _u64(s >> 64 for s in v6.starts),
        _u64(s & MASK64 for s in v6.starts),
        _u64(e >> 64 for e in v6.ends),
        _u64(e & MASK64 for e in v6.ends),
        _u32(v6.members),
        _u32(words),
        _entry_table(keys[4], first[4], tables[4], now) + _entry_table(keys[6], first[6], tables[6], now),
    ]
    _write_atomic(output, sections, (total, len(v4.starts), len(v6.starts), len(words)))
    active = len(tables[4].current) + len(tables[6].current)
    return total, active, len(v4.starts), len(v6.starts)


def _sorted_keys(entries: _Entries) -> tuple[list[int], list[int]]:
    """Every entry key in ascending order, and the first_seen of each.

    first_seen rides in the low bits of the sort key so that no dictionary
    is probed in sorted (random-access) order; the two lists are built as
    fresh objects in order, so the later passes over them read memory
    sequentially (about 8x faster than walking the sorted originals).
    """
    packed = [key << 64 | seen for key, seen in entries.current.items()]
    packed += [key << 64 | seen for key, (seen, _gone) in entries.history.items()]
    packed.sort()
    return [value >> 64 for value in packed], [value & MASK64 for value in packed]


def _entry_table(keys: list[int], first: list[int], entries: _Entries, now: int) -> bytearray:
    """ENTRY records for `keys`, filled a column at a time through strided views (a per-record pack is 3x slower)."""
    table = bytearray(ENTRY.size * len(keys))
    words, quads = memoryview(table).cast("I"), memoryview(table).cast("Q")  # 10 words / 5 quads per record
    version = 4 if entries.bits == 32 else 6
    last = [now] * len(keys)
    flags = [version | ((key >> FEED_SHIFT) & 0xFF) << 8 | 1 << 16 for key in keys]  # version, prefix, active
    for key, (_seen, gone) in entries.history.items():
        at = bisect_left(keys, key)
        last[at], flags[at] = gone, flags[at] & 0xFFFF
    words[0::10] = array("I", [key & FEED_MASK for key in keys])
    words[1::10] = array("I", flags)
    # The network, big-endian in 16 bytes, as four byte-swapped words; an
    # IPv4 network has only the last (the table starts zeroed).
    for chunk in range(3 if version == 4 else 0, 4):
        shift = FEED_SHIFT + 8 + 96 - 32 * chunk
        column = array("I", [(key >> shift) & 0xFFFFFFFF for key in keys])
        column.byteswap()
        words[2 + chunk :: 10] = column
    quads[3::5] = array("Q", first)
    quads[4::5] = array("Q", last)
    words.release()
    quads.release()
    return table


def _u32(values: Iterable[int]) -> bytes:
    return array("I", values).tobytes()


def _u64(values: Iterable[int]) -> bytes:
    return array("Q", values).tobytes()


def _write_atomic(output: str, sections: list[bytes | bytearray], counts: tuple[int, int, int, int]) -> None:
    """Temp file beside `output`, fsync, rename over it, fsync the directory: never a half-written database."""
    spans, size = layout(section_lengths(len(sections[0]), *counts))
    header = pack_header(size, counts, spans, bytes(sections[0]))
    directory = os.path.dirname(os.path.abspath(output))
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(output)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(header)
            for section, (offset, length) in zip(sections, spans, strict=True):  # a section missing is a bug
                if len(section) != length:
                    raise RuntimeError("intel database section does not match its planned length")
                handle.write(b"\0" * (offset - handle.tell()))
                handle.write(section)
            handle.write(b"\0" * (size - handle.tell()))
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(temp, output)
    except BaseException:
        remove_quietly(temp)
        raise
    sync_directory(directory)
