"""Threat-intel feeds: parsers, compiler and mapped database reader.

Lookups are checked against a brute-force reference on random feeds with
nested and overlapping prefixes; the reader is fed truncated, inconsistent
and bit-flipped files and must only ever raise IntelDatabaseError.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import random
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest

import broker.intel.feeds as intel_feeds
from bastion_wire.intel_db import (
    HEADER,
    SECTIONS,
    IntelDatabase,
    IntelDatabaseError,
    Match,
    header_crc,
    layout,
    pack_header,
    section_lengths,
)
from broker.intel.compile import FeedSource, compile_feeds
from broker.intel.feeds import ParsedFeed, parse_feed

DB1 = 0x0A000000  # 10.0.0.0
V6 = int(ipaddress.IPv6Address("2001:db8::"))


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def v6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


# --- parsers ----------------------------------------------------------------

NETSET_CASES = [
    pytest.param(
        b"# FireHOL-style header\n; Spamhaus-style comment\n\n1.2.3.4\n10.0.0.0/8 ; SBL123456\n"
        b"192.168.1.0/24 # note\n  5.6.7.8  \n1.2.3.4\n2001:DB8::/32\n2001:db8::1\n",
        ParsedFeed(
            [
                (4, v4("1.2.3.4"), 32),
                (4, DB1, 8),
                (4, v4("192.168.1.0"), 24),
                (4, v4("5.6.7.8"), 32),
                (6, V6, 32),
                (6, V6 + 1, 128),
            ],
            lines=7,
            malformed=0,
            malformed_examples=[],
        ),
        id="comments-duplicates-ipv6",
    ),
    pytest.param(
        b"\xef\xbb\xbf1.2.3.4\r\n10.0.0.0/8\r\n# c\r\n\r\n",
        ParsedFeed([(4, v4("1.2.3.4"), 32), (4, DB1, 8)], lines=2, malformed=0, malformed_examples=[]),
        id="bom-crlf",
    ),
    pytest.param(
        b"1.2.3.0/024\n1.2.3.0/255.255.255.0\n0.0.0.0/0\n::/0\n",
        ParsedFeed([(4, v4("1.2.3.0"), 24), (4, 0, 0), (6, 0, 0)], lines=4, malformed=0, malformed_examples=[]),
        id="non-canonical-but-valid",
    ),
    pytest.param(
        b"10.0.0.1/8\nhello\n1.2.3.256\n01.2.3.4\n1.2.3.4/33\n2001:db8::1/32\n1.2.3.4 # caf\xe9\n"
        b"fe80::1%eth0\n1.2.3\n1.2.3.4 /24\n9.9.9.9\n",
        ParsedFeed(
            [(4, v4("9.9.9.9"), 32)],
            lines=11,
            malformed=10,
            malformed_examples=[
                "line 1: host bits set: '10.0.0.1/8'",
                "line 2: not an IP address or network: 'hello'",
                "line 3: not an IP address or network: '1.2.3.256'",
                "line 4: not an IP address or network: '01.2.3.4'",
                "line 5: not an IP address or network: '1.2.3.4/33'",
            ],
        ),
        id="malformed",
    ),
    pytest.param(
        b"2001:db8::1/32\n\xff\xfe\n" + b"x" * 100 + b"\n",
        ParsedFeed(
            [],
            lines=3,
            malformed=3,
            malformed_examples=[
                "line 1: host bits set: '2001:db8::1/32'",
                "line 2: not valid UTF-8: b'\\xff\\xfe'",
                "line 3: not an IP address or network: '" + "x" * 60 + "'",
            ],
        ),
        id="ipv6-host-bits-bad-utf8-long",
    ),
]


@pytest.mark.parametrize(("data", "expected"), NETSET_CASES)
def test_netset(data: bytes, expected: ParsedFeed) -> None:
    assert parse_feed(data, "netset") == expected


FEODO = b"""################################################################
# abuse.ch Feodo Tracker Botnet C2 IP Blocklist (CSV)           #
################################################################
#
"first_seen_utc","dst_ip","dst_port","c2_status","last_online","malware"
"2021-01-17 07:44:46","51.75.37.16","443","online","2026-11-20","Dridex"\r
"2021-01-18 07:44:46","1.2.3.4","443","online","2026-11-20","QakBot"

"2021-01-19 07:44:46","1.2.3.4","8080","offline","2026-11-20","QakBot"
"2021-01-19 07:44:46","2001:db8::5","8080","offline","2026-11-20","QakBot"
"only one column"
"2021-01-19","not-an-ip","1"
"2021-01-19","10.0.0.0/8","1"
"2021,01","5.6.7.8"
"unterminated,9.9.9.9
"""

CSV_CASES = [
    pytest.param(
        FEODO,
        {"column": 2},
        ParsedFeed(
            [
                (4, v4("51.75.37.16"), 32),
                (4, v4("1.2.3.4"), 32),
                (6, v6("2001:db8::5"), 128),
                (4, DB1, 8),
                (4, v4("5.6.7.8"), 32),
            ],
            lines=9,
            malformed=3,
            malformed_examples=[
                "line 11: too few columns (1 < 2): '\"only one column\"'",
                "line 12: not an IP address or network: 'not-an-ip'",
                "line 15: CSV syntax error: '\"unterminated,9.9.9.9'",
            ],
        ),
        id="feodo-header",
    ),
    pytest.param(
        b"1.2.3.4;x\n# comment\n5.6.7.8;y\n",
        {"column": 1, "header": False, "delimiter": ";"},
        ParsedFeed([(4, v4("1.2.3.4"), 32), (4, v4("5.6.7.8"), 32)], lines=2, malformed=0, malformed_examples=[]),
        id="no-header-semicolon",
    ),
    pytest.param(
        b"ip,note\n1.2.3.4,caf\xe9\n 5.6.7.8 ,ok\n",
        {"column": 1},
        ParsedFeed(
            [(4, v4("5.6.7.8"), 32)],
            lines=2,
            malformed=1,
            malformed_examples=["line 2: not valid UTF-8: b'1.2.3.4,caf\\xe9'"],
        ),
        id="bad-utf8-row-and-padded-cell",
    ),
    pytest.param(
        b"ip\n",
        {"column": 1},
        ParsedFeed([], lines=0, malformed=0, malformed_examples=[]),
        id="header-only",
    ),
]


@pytest.mark.parametrize(("data", "options", "expected"), CSV_CASES)
def test_csv(data: bytes, options: dict[str, object], expected: ParsedFeed) -> None:
    assert parse_feed(data, "csv", **options) == expected  # type: ignore[arg-type]


EXIT_ADDRESSES = b"""ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E
Published 2026-11-24 02:27:47
LastStatus 2026-11-24 04:00:00
ExitAddress 162.247.74.201 2026-11-24 04:01:53
ExitNode 0091174DE56EADE2A1C8D5F7A1B4B5E6F6F6F6F6
Published 2026-11-24 03:00:00
LastStatus 2026-11-24 05:00:00
ExitAddress 1.2.3.4 2026-11-24 05:01:00
ExitAddress 1.2.3.4 2026-11-24 05:02:00
ExitAddress 10.0.0.0/8 2026-11-24 05:03:00
ExitAddress
Router 5.6.7.8
ExitAddress 2001:db8::7 2026-11-24 05:04:00

"""

TOR_CASES = [
    pytest.param(
        EXIT_ADDRESSES,
        ParsedFeed(
            [(4, v4("162.247.74.201"), 32), (4, v4("1.2.3.4"), 32), (6, v6("2001:db8::7"), 128)],
            lines=7,
            malformed=3,
            malformed_examples=[
                "line 10: a network where an address was expected: '10.0.0.0/8'",
                "line 11: not an exit-list line: 'ExitAddress'",
                "line 12: not an exit-list line: 'Router 5.6.7.8'",
            ],
        ),
        id="exit-addresses",
    ),
    pytest.param(
        b"1.2.3.4\r\n5.6.7.8\n1.2.3.4\n\n999.1.1.1\n2001:db8::/32\n",
        ParsedFeed(
            [(4, v4("1.2.3.4"), 32), (4, v4("5.6.7.8"), 32)],
            lines=5,
            malformed=2,
            malformed_examples=[
                "line 5: not an IP address or network: '999.1.1.1'",
                "line 6: a network where an address was expected: '2001:db8::/32'",
            ],
        ),
        id="bulk-list",
    ),
]


@pytest.mark.parametrize(("data", "expected"), TOR_CASES)
def test_tor_exits(data: bytes, expected: ParsedFeed) -> None:
    assert parse_feed(data, "tor_exits") == expected


def test_examples_are_capped_at_five_but_all_counted() -> None:
    parsed = parse_feed(b"bad\n" * 12, "netset")
    assert (parsed.lines, parsed.malformed, len(parsed.malformed_examples)) == (12, 12, 5)
    assert parsed.malformed_examples[-1] == "line 5: not an IP address or network: 'bad'"


def test_feed_size_and_options_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intel_feeds, "MAX_FEED_BYTES", 16)
    assert parse_feed(b"1.2.3.4\n" * 2, "netset").lines == 2
    with pytest.raises(ValueError, match="limit"):
        parse_feed(b"1.2.3.4\n" * 2 + b"\n", "netset")
    with pytest.raises(ValueError, match="unknown feed format"):
        parse_feed(b"", "json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="column"):
        parse_feed(b"", "csv", column=0)


# --- compile + lookup against a brute-force reference --------------------------

Entry = tuple[int, int, int, int]  # feed, version, network, prefix length


def _random_networks(rng: random.Random, version: int, count: int) -> list[tuple[int, int]]:
    """Networks packed into a few small areas (and both ends of the space) so they nest and overlap."""
    bits = 32 if version == 4 else 128
    if version == 4:
        areas = [0, v4("10.1.0.0"), v4("10.1.16.0"), v4("203.0.112.0"), v4("255.255.240.0")]
        prefixes = [0, 8, 12, 16, 19, 20, 21, 24, 24, 25, 28, 30, 31, 32, 32, 32]
        spread = 12
    else:
        areas = [0, V6, V6 | 1 << 64, V6 | 1 << 64 | 0xFFFF0000, (1 << 128) - (1 << 16)]
        prefixes = [16, 32, 48, 63, 64, 65, 96, 112, 116, 120, 124, 127, 128, 128]
        spread = 16
    networks = []
    for _ in range(count):
        plen = rng.choice(prefixes)
        if plen == 0 and rng.random() < 0.8:  # /0 swallows everything: keep it rare
            plen = 32 if version == 4 else 128
        address = rng.choice(areas) | rng.getrandbits(spread)
        networks.append((address >> (bits - plen) << (bits - plen), plen))
    return networks


def _text(version: int, network: int, plen: int) -> str:
    return str(ipaddress.ip_network((network, plen)) if version == 4 else ipaddress.IPv6Network((network, plen)))


def _write_feeds(rng: random.Random, directory: Path) -> tuple[list[FeedSource], list[Entry]]:
    """Three feeds (two netsets, one CSV) sharing some networks; returns sources and the distinct entries."""
    sources, entries, shared = [], [], []
    for feed in range(3):
        lines = []
        networks = [(4, *n) for n in _random_networks(rng, 4, 60)] + [(6, *n) for n in _random_networks(rng, 6, 40)]
        networks += shared[:15]  # the same networks in several feeds
        networks += rng.sample(networks, 10)  # duplicates within the feed
        rng.shuffle(networks)
        shared = networks
        for version, network, plen in networks:
            text = _text(version, network, plen)
            lines.append(text.split("/")[0] if plen == (32 if version == 4 else 128) and rng.random() < 0.5 else text)
        entries += [(feed, version, network, plen) for version, network, plen in dict.fromkeys(networks)]
        path = directory / f"feed{feed}.txt"
        if feed == 2:
            path.write_text("ip,comment\n" + "".join(f'"{line}","x"\n' for line in lines))
            sources.append(FeedSource(f"feed{feed}", str(path), "csv", "spam", 40))
        else:
            path.write_text("# generated\n" + "".join(f"{line} ; n{i}\n" for i, line in enumerate(lines)))
            sources.append(FeedSource(f"feed{feed}", str(path), "netset", "malware", 90))
    return sources, entries


def _reference(entries: list[Entry], version: int, address: int) -> list[tuple[int, str]]:
    bits = 32 if version == 4 else 128
    found = [
        (feed, network, plen)
        for feed, ver, network, plen in entries
        if ver == version and address >> (bits - plen) == network >> (bits - plen)
    ]
    found.sort(key=lambda item: (-item[2], item[0]))
    return [(feed, _text(version, network, plen)) for feed, network, plen in found]


def _probes(rng: random.Random, entries: list[Entry], version: int) -> list[int]:
    bits = 32 if version == 4 else 128
    top = (1 << bits) - 1
    probes = {0, top}
    for _feed, ver, network, plen in entries:
        if ver == version:
            end = network + (1 << (bits - plen)) - 1
            probes.update(a for a in (network - 1, network, network + 1, end - 1, end, end + 1) if 0 <= a <= top)
    for area, _ in _random_networks(rng, version, 300):
        probes.add(area | rng.getrandbits(8))
    probes.update(rng.getrandbits(bits) for _ in range(100))
    return sorted(probes)


@contextmanager
def opened(path: Path | str) -> Iterator[IntelDatabase]:
    fd = os.open(path, os.O_RDONLY)
    try:
        with IntelDatabase.open_fd(fd) as database:
            yield database
    finally:
        os.close(fd)


def _intervals(database: IntelDatabase, version: int) -> list[tuple[int, int, list[int]]]:
    """(start, end, entry ids) per stored interval, read through the private tables."""
    if version == 4:
        starts, ends = database._v4_start.tolist(), database._v4_end.tolist()
        members = database._v4_member.tolist()
    else:
        starts = [
            h << 64 | lo for h, lo in zip(database._v6_start_hi.tolist(), database._v6_start_lo.tolist(), strict=True)
        ]
        ends = [h << 64 | lo for h, lo in zip(database._v6_end_hi.tolist(), database._v6_end_lo.tolist(), strict=True)]
        members = database._v6_member.tolist()
    words = database._members.tolist()
    return [(s, e, words[m + 1 : m + 1 + words[m]]) for s, e, m in zip(starts, ends, members, strict=True)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_lookup_matches_brute_force(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    sources, entries = _write_feeds(rng, tmp_path)
    report = compile_feeds(sources, str(tmp_path / "intel.db"), now=1_700_000_000)
    assert report.entries == report.active == len(entries)
    assert [feed.entries for feed in report.feeds] == [sum(1 for e in entries if e[0] == i) for i in range(3)]
    checked = 0
    with opened(tmp_path / "intel.db") as database:
        for version in (4, 6):
            for address in _probes(rng, entries, version):
                got = database.lookup(version, address)
                assert [(m.feed, m.prefix) for m in got] == _reference(entries, version, address), (version, address)
                assert all(m.active and m.first_seen == m.last_seen == 1_700_000_000 for m in got)
                checked += len(got)
    assert checked > 500  # the probes did land inside the networks


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_intervals_are_sorted_disjoint_and_merged(tmp_path: Path, seed: int) -> None:
    sources, entries = _write_feeds(random.Random(seed), tmp_path)
    compile_feeds(sources, str(tmp_path / "intel.db"), now=1)
    lists: set[tuple[int, ...]] = set()
    with opened(tmp_path / "intel.db") as database:
        for version in (4, 6):
            intervals = _intervals(database, version)
            assert intervals
            for (s1, e1, m1), (s2, _e2, m2) in itertools.pairwise(intervals):
                assert s1 <= e1 < s2
                assert not (e1 + 1 == s2 and m1 == m2), "adjacent intervals with the same entries were not merged"
            assert all(members for _s, _e, members in intervals)
            lists |= {tuple(members) for _s, _e, members in intervals}
        assert database.counts["member_words"] == sum(len(m) + 1 for m in lists)  # each list stored once


def test_nested_order_most_specific_then_feed(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("10.0.0.0/8\n10.1.2.0/24\n")
    (tmp_path / "b").write_text("10.1.2.0/24\n10.1.0.0/16\n10.1.2.3\n")
    sources = [
        FeedSource("a", str(tmp_path / "a"), "netset", "x", 50),
        FeedSource("b", str(tmp_path / "b"), "netset", "y", 60),
    ]
    compile_feeds(sources, str(tmp_path / "db"), now=5)
    with opened(tmp_path / "db") as database:
        got = [(m.feed, m.prefix) for m in database.lookup(4, v4("10.1.2.3"))]
        assert got == [
            (1, "10.1.2.3/32"),
            (0, "10.1.2.0/24"),
            (1, "10.1.2.0/24"),
            (1, "10.1.0.0/16"),
            (0, "10.0.0.0/8"),
        ]
        assert [(m.feed, m.prefix) for m in database.lookup(4, v4("10.2.0.0"))] == [(0, "10.0.0.0/8")]
        assert database.lookup(4, v4("11.0.0.0")) == []
        assert database.lookup(6, 1) == []
        assert [f.name for f in database.meta.feeds] == ["a", "b"]
        assert database.meta.compiled_at == "1970-01-01T00:00:05Z"


def test_missing_output_directory_is_not_created(tmp_path: Path) -> None:
    """Creating the state directory is the CLI's decision (tests/test_output_dir.py), not the compiler's."""
    (tmp_path / "a").write_text("203.0.113.0/24\n")
    output = tmp_path / "not" / "yet" / "intel.db"
    with pytest.raises(FileNotFoundError):
        compile_feeds([FeedSource("a", str(tmp_path / "a"), "netset", "x", 50)], str(output), now=5)
    assert not (tmp_path / "not").exists()


def test_empty_database(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("# nothing listed today\n")
    report = compile_feeds([FeedSource("a", str(tmp_path / "a"), "netset", "x", 50)], str(tmp_path / "db"), now=5)
    assert (report.entries, report.intervals_v4, report.intervals_v6) == (0, 0, 0)
    with opened(tmp_path / "db") as database:
        assert database.lookup(4, 0) == database.lookup(4, (1 << 32) - 1) == database.lookup(6, 1 << 127) == []
        assert [feed.entries for feed in database.meta.feeds] == [0]


def test_lookup_rejects_bad_arguments_and_closed_database(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1.2.3.4\n")
    compile_feeds([FeedSource("a", str(tmp_path / "a"), "netset", "x", 50)], str(tmp_path / "db"), now=5)
    fd = os.open(tmp_path / "db", os.O_RDONLY)
    database = IntelDatabase.open_fd(fd)
    for version, value in ((4, 1 << 32), (4, -1), (6, 1 << 128), (5, 0)):
        with pytest.raises(ValueError):
            database.lookup(version, value)
    assert database.lookup(4, v4("1.2.3.4")) == [Match(0, "1.2.3.4/32", 5, 5, True)]
    database.close()
    database.close()
    os.fstat(fd)  # still open: the descriptor stays the caller's
    os.close(fd)
    with pytest.raises(IntelDatabaseError, match="closed"):
        database.lookup(4, v4("1.2.3.4"))


# --- history ------------------------------------------------------------------

DAY = 86400


def _entries_by_name(path: Path) -> dict[tuple[str, str], tuple[int, int, bool]]:
    with opened(path) as database:
        names = [feed.name for feed in database.meta.feeds]
        return {
            (names[feed], _text(version, network, plen)): (first, last, active)
            for feed, version, network, plen, active, first, last in database.entries()
        }


def test_history_across_three_compiles(tmp_path: Path) -> None:
    a, b, db = tmp_path / "a", tmp_path / "b", tmp_path / "intel.db"
    sources = [FeedSource("a", str(a), "netset", "x", 50), FeedSource("b", str(b), "netset", "y", 60)]
    t1, t2, t3 = 1000 * DAY, 1010 * DAY, 1025 * DAY
    a.write_text("1.2.3.4\n10.0.0.0/8\n2001:db8::/32\n")
    b.write_text("5.6.7.8\n10.0.0.0/8\n")
    compile_feeds(sources, str(db), previous=str(db), now=t1, history_days=20)
    a.write_text("1.2.3.4\n2.2.2.2\n")
    b.write_text("10.0.0.0/8\n")
    report = compile_feeds(sources, str(db), previous=str(db), now=t2, history_days=20)
    assert (report.entries, report.active) == (6, 3)
    assert _entries_by_name(db) == {
        ("a", "1.2.3.4/32"): (t1, t2, True),
        ("a", "2.2.2.2/32"): (t2, t2, True),
        ("a", "10.0.0.0/8"): (t1, t1, False),
        ("a", "2001:db8::/32"): (t1, t1, False),
        ("b", "5.6.7.8/32"): (t1, t1, False),
        ("b", "10.0.0.0/8"): (t1, t2, True),
    }
    with opened(db) as database:  # inactive entries are still found, flagged
        assert database.lookup(4, v4("10.9.9.9")) == [
            Match(0, "10.0.0.0/8", t1, t1, False),
            Match(1, "10.0.0.0/8", t1, t2, True),
        ]
    # Third compile, 25 days after the first: what left at t1 ages out (older
    # than 20 days), what left at t2 stays; a delisted entry coming back keeps first_seen.
    a.write_text("10.0.0.0/8\n")
    b.write_text("")
    compile_feeds(sources, str(db), previous=str(db), now=t3, history_days=20)
    assert _entries_by_name(db) == {
        ("a", "1.2.3.4/32"): (t1, t2, False),
        ("a", "2.2.2.2/32"): (t2, t2, False),
        ("a", "10.0.0.0/8"): (t1, t3, True),
        ("b", "10.0.0.0/8"): (t1, t2, False),
    }


def test_without_previous_history_starts_fresh(tmp_path: Path) -> None:
    a, db = tmp_path / "a", tmp_path / "intel.db"
    a.write_text("1.2.3.4\n")
    sources = [FeedSource("a", str(a), "netset", "x", 50)]
    compile_feeds(sources, str(db), now=100)
    a.write_text("5.6.7.8\n")
    compile_feeds(sources, str(db), previous=None, now=200)
    assert _entries_by_name(db) == {("a", "5.6.7.8/32"): (200, 200, True)}


def test_removed_feed_history_is_dropped_and_reported(tmp_path: Path) -> None:
    a, b, db = tmp_path / "a", tmp_path / "b", tmp_path / "intel.db"
    a.write_text("1.2.3.4\n")
    b.write_text("5.6.7.8\n")
    both = [FeedSource("a", str(a), "netset", "x", 50), FeedSource("b", str(b), "netset", "y", 60)]
    compile_feeds(both, str(db), now=100)
    report = compile_feeds(both[1:], str(db), previous=str(db), now=200)
    assert report.dropped_feeds == ["a"]
    assert _entries_by_name(db) == {("b", "5.6.7.8/32"): (100, 200, True)}


def test_unreadable_previous_database_is_an_error(tmp_path: Path) -> None:
    a, db = tmp_path / "a", tmp_path / "intel.db"
    a.write_text("1.2.3.4\n")
    db.write_bytes(b"not a database at all")
    with pytest.raises(IntelDatabaseError, match="(?i)move it away"):
        compile_feeds([FeedSource("a", str(a), "netset", "x", 50)], str(db), previous=str(db), now=1)
    assert db.read_bytes() == b"not a database at all"


# --- corrupt databases --------------------------------------------------------


@pytest.fixture
def small_db(tmp_path: Path) -> bytes:
    (tmp_path / "a").write_text("10.0.0.0/8\n10.1.0.0/16\n1.2.3.4\n2001:db8::/32\n2001:db8::1\n")
    (tmp_path / "b").write_text("10.1.2.0/24\n1.2.3.4\n2001:db8::/48\n")
    sources = [
        FeedSource("a", str(tmp_path / "a"), "netset", "x", 50),
        FeedSource("b", str(tmp_path / "b"), "netset", "y", 60),
    ]
    compile_feeds(sources, str(tmp_path / "good.db"), now=100)
    return (tmp_path / "good.db").read_bytes()


PROBES = [
    (4, v4(a)) for a in ("10.1.2.3", "10.0.0.0", "1.2.3.4", "1.2.3.5", "9.255.255.255", "10.255.255.255", "0.0.0.0")
] + [(6, v6(a)) for a in ("2001:db8::1", "2001:db8::2", "2001:db8:1::", "::", "ffff::")]


def _exercise(data: bytes, path: Path) -> None:
    """Open and use a (possibly damaged) database; only IntelDatabaseError may escape."""
    path.write_bytes(data)
    try:
        with opened(path) as database:
            for version, address in PROBES:
                database.lookup(version, address)
            list(database.entries())
    except IntelDatabaseError:
        pass


def _fields(data: bytes) -> list:
    return list(HEADER.unpack_from(data, 0))


def _repack(data: bytes, fields: list) -> bytes:
    """`data` with a header made of `fields` and a valid CRC: damage that only the consistency checks can catch."""
    offset, length = fields[8], fields[9]  # the meta section
    meta = data[offset : offset + length] if offset + length <= len(data) else b""
    draft = HEADER.pack(*fields[:-1], 0)
    header = HEADER.pack(*fields[:-1], header_crc(draft[:-4], meta))
    return header + data[HEADER.size :]


def _span(data: bytes, name: str) -> tuple[int, int]:
    index = 8 + 2 * SECTIONS.index(name)
    fields = _fields(data)
    return fields[index], fields[index + 1]


def _expect_error(data: bytes, path: Path, match: str | None = None) -> None:
    path.write_bytes(data)
    with pytest.raises(IntelDatabaseError, match=match):
        with opened(path):
            pass


def test_the_fixture_database_is_valid(small_db: bytes, tmp_path: Path) -> None:
    path = tmp_path / "copy.db"
    path.write_bytes(small_db)
    with opened(path) as database:
        assert len(database.lookup(4, v4("10.1.2.3"))) == 3
    assert _repack(small_db, _fields(small_db)) == small_db  # the helper reproduces a valid header


def test_truncated_anywhere(small_db: bytes, tmp_path: Path) -> None:
    cuts = set(range(0, len(small_db), 97)) | {
        1,
        7,
        8,
        HEADER.size - 1,
        HEADER.size,
        HEADER.size + 1,
        len(small_db) - 1,
        len(small_db) - 8,
    }
    for cut in sorted(cuts):
        _expect_error(small_db[:cut], tmp_path / "cut.db")
    _expect_error(small_db + b"\0" * 8, tmp_path / "long.db", "extended")


def test_wrong_magic_and_version(small_db: bytes, tmp_path: Path) -> None:
    _expect_error(b"XXXXXXXX" + small_db[8:], tmp_path / "m.db", "bad magic")
    fields = _fields(small_db)
    fields[1] = 2
    _expect_error(_repack(small_db, fields), tmp_path / "v.db", "format version 2")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        (8, 10**9, "section table"),  # meta offset past the end
        (9, 10**9, "section table"),  # meta length past the end
        (31, 1 << 40, "section table"),  # entries length past the end
        (30, 8, "section table"),  # entries overlapping an earlier section
        (4, 1 << 40, "counts out of range"),  # entries count
        (5, 1 << 20, "section table"),  # v4 interval count inconsistent
        (7, 1, "section table"),  # member words
        (3, 1 << 62, "truncated or extended"),  # file size
        (2, 64, "header size"),
        (32, 1, "reserved"),
    ],
)
def test_inconsistent_header_with_valid_checksum(
    small_db: bytes, tmp_path: Path, field: int, value: int, match: str
) -> None:
    fields = _fields(small_db)
    fields[field] = value
    _expect_error(_repack(small_db, fields), tmp_path / "bad.db", match)


def test_every_header_and_metadata_byte_flip_is_caught(small_db: bytes, tmp_path: Path) -> None:
    rng = random.Random(7)
    meta_end = sum(_span(small_db, "meta"))
    for position in range(meta_end):
        damaged = bytearray(small_db)
        damaged[position] ^= rng.randrange(1, 256)
        _expect_error(bytes(damaged), tmp_path / "flip.db")


def test_index_ends_are_checked(small_db: bytes, tmp_path: Path) -> None:
    offset, length = _span(small_db, "v4_index")
    damaged = bytearray(small_db)
    damaged[offset + length - 4 : offset + length] = struct.pack("<I", 12345)
    _expect_error(bytes(damaged), tmp_path / "idx.db", "index")


@pytest.mark.parametrize(
    ("section", "word", "value"),
    [
        ("v4_member", 0, 0xFFFFFFF0),  # membership offset past its section
        ("members", 0, 0xFFFFFFFF),  # a list longer than its section
        ("members", 1, 0x7FFFFFFF),  # an entry id past the entries
        ("v4_index", 2000, 0xFFFFFFFF),  # a bucket range past the intervals
    ],
)
def test_damaged_tables_raise_intel_errors_on_lookup(
    small_db: bytes, tmp_path: Path, section: str, word: int, value: int
) -> None:
    offset, _length = _span(small_db, section)
    damaged = bytearray(small_db)
    damaged[offset + 4 * word : offset + 4 * word + 4] = struct.pack("<I", value)
    path = tmp_path / "body.db"
    path.write_bytes(bytes(damaged))
    with opened(path) as database:
        with pytest.raises(IntelDatabaseError):
            for version, address in PROBES + [(4, (2000 << 16) + 1)]:
                database.lookup(version, address)


def test_random_body_flips_never_raise_anything_else(small_db: bytes, tmp_path: Path) -> None:
    rng = random.Random(11)
    tables = [_span(small_db, name) for name in SECTIONS[1:] if _span(small_db, name)[1]]
    for _ in range(2000):
        damaged = bytearray(small_db)
        for _flip in range(rng.choice((1, 1, 3))):
            offset, length = rng.choice(tables)  # every table equally, not mostly the big IPv4 index
            damaged[offset + rng.randrange(length)] ^= rng.randrange(1, 256)
        _exercise(bytes(damaged), tmp_path / "flip.db")


@pytest.mark.parametrize(
    "meta",
    [
        b"\xc1",  # not msgpack
        msgspec.msgpack.encode({"compiled_at": "x", "feeds": [{"name": "a"}]}),  # fields missing
        msgspec.msgpack.encode({"compiled_at": "x", "feeds": [], "extra": 1}),  # unknown field
        msgspec.msgpack.encode(
            {
                "compiled_at": "x",
                "feeds": [
                    {
                        "name": "a",
                        "category": "c",
                        "confidence": 101,
                        "source": "s",
                        "sha256": "h",
                        "entries": 0,
                        "malformed": 0,
                        "source_mtime": "t",
                    }
                ],
            }
        ),  # confidence out of range
    ],
)
def test_hostile_metadata_with_valid_layout_and_checksum(tmp_path: Path, meta: bytes) -> None:
    counts = (0, 0, 0, 0)
    spans, size = layout(section_lengths(len(meta), *counts))
    data = bytearray(size)
    data[: HEADER.size] = pack_header(size, counts, spans, meta)
    data[spans[0][0] : spans[0][0] + len(meta)] = meta
    _expect_error(bytes(data), tmp_path / "meta.db", "metadata unreadable")


def test_empty_and_non_file_descriptors(tmp_path: Path) -> None:
    _expect_error(b"", tmp_path / "empty.db", "cannot map")
    read, write = os.pipe()
    try:
        with pytest.raises(IntelDatabaseError, match="cannot map"):
            IntelDatabase.open_fd(read)
    finally:
        os.close(read)
        os.close(write)


# --- atomic write ---------------------------------------------------------------


def test_failed_compile_leaves_previous_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, db = tmp_path / "a", tmp_path / "intel.db"
    a.write_text("1.2.3.4\n")
    good = [FeedSource("a", str(a), "netset", "x", 50)]
    compile_feeds(good, str(db), now=1)
    before = db.read_bytes()
    assert stat.S_IMODE(db.stat().st_mode) == 0o644
    missing = good + [FeedSource("b", str(tmp_path / "missing"), "netset", "x", 50)]
    with pytest.raises(FileNotFoundError):
        compile_feeds(missing, str(db), previous=str(db), now=2)
    a.write_text("5.6.7.8\n")

    def fail_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="disk full"):
        compile_feeds(good, str(db), previous=str(db), now=3)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "intel.db"]  # no temp file left behind


def test_duplicate_feed_names_and_bad_confidence_are_refused(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_text("1.2.3.4\n")
    with pytest.raises(ValueError, match="unique"):
        compile_feeds([FeedSource("a", str(a), "netset", "x", 50)] * 2, str(tmp_path / "db"))
    with pytest.raises(ValueError, match="confidence"):
        compile_feeds([FeedSource("a", str(a), "netset", "x", 101)], str(tmp_path / "db"))
    assert not (tmp_path / "db").exists()
