"""Log-line timestamps (workers/timestamps.py), the window the grep worker applies with them
(workers/search.py) and the since/until arguments (broker/tools/query_logs/time_window.py)."""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion_wire.protocol import Done, Lines, SearchFile, SearchRequest
from broker.tools.query_logs.time_window import MAX_LENGTH, WindowError, parse_time_argument, parse_window
from workers import timestamps
from workers.search import search
from workers.timestamps import HEAD, LineClock


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> float:
    """Expected values, computed independently of the code under test."""
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC).timestamp()


HOUR = 3600
REFERENCE = utc(2026, 11, 30, 12)  # most tests: a file last modified at the end of November 2026
T = utc(2026, 11, 24, 3, 41, 17)  # the moment most sample lines record
GREP = shutil.which("grep") or "/usr/bin/grep"

# --- every accepted format -----------------------------------------------------------------

ACCEPTED: list[tuple[bytes, float]] = [
    # RFC 3164
    (b"Nov 24 03:41:17 host sshd[812]: Failed password for root from 203.0.113.7 port 22 ssh2", T),
    (b"Nov  4 03:41:17 host su: 'su root' failed", utc(2026, 11, 4, 3, 41, 17)),
    (b"Nov 04 03:41:17 host zero-padded day", utc(2026, 11, 4, 3, 41, 17)),
    (b"Jan  1 00:00:00 host", utc(2026, 1, 1)),
    (b"<34>Nov 24 03:41:17 host su: priority first", T),
    (b"<0>Nov 24 03:41:17 host", T),
    (b"<191>Nov 24 03:41:17 host", T),
    (b"Nov 24 03:41:17.123 host fractional", T + 0.123),
    (b"Nov 24 03:41:17.123456 host", T + 0.123456),
    (b"Nov 24 03:41:17", T),
    (b"Nov 24 03:41:17\r", T),
    (b"Nov 24 03:41:17\x00host", T),
    (b"   Nov 24 03:41:17 host leading spaces", T),
    (b"\tNov 24 03:41:17 host leading tab", T),
    (b"Nov 24 23:59:60 host leap second", utc(2026, 11, 25)),
    # RFC 5424
    (b"<34>1 2026-11-24T03:41:17.123456+01:00 host app 4242 ID47 - msg", T - HOUR + 0.123456),
    (b"<165>1 2026-11-24T03:41:17Z host app - - - msg", T),
    (b"<0>1 2026-11-24T03:41:17.003-07:30 host app - - -", T + 7.5 * HOUR + 0.003),
    (b"<34>12 2026-11-24T03:41:17Z host future version", T),
    (b"<34>2026-11-24T03:41:17Z host rsyslog forwarding format", T),
    # ISO 8601 / RFC 3339
    (b"2026-11-24T03:41:17Z host app: msg", T),
    (b"2026-11-24t03:41:17z lower-case t and z", T),
    (b"2026-11-24T03:41:17.5+02:00 host", T - 2 * HOUR + 0.5),
    (b"2026-11-24T03:41:17+0530 basic offset", T - 5.5 * HOUR),
    (b"2026-11-24T03:41:17-03 hour-only offset", T + 3 * HOUR),
    (b"2026-11-24T03:41:17-00:00", T),
    (b"2026-11-24 03:41:17 space separator, no zone", T),
    (b"2026-11-24 03:41:17,123 - root - INFO - python logging", T + 0.123),
    (b"2026-11-24T03:41:17.123456789Z nine digits", T + 0.123456789),
    (b"2026-11-24T03:41:17", T),
    (b"2026-11-24T00:30:00+01:00 previous day in UTC", utc(2026, 11, 23, 23, 30)),
    (b"2024-02-29T12:00:00Z leap day", utc(2024, 2, 29, 12)),
    (b"1970-01-01T00:00:00Z", 0.0),
    (b"9999-12-31T23:59:59Z", utc(9999, 12, 31, 23, 59, 59)),
    (b"  2026-11-24T03:41:17Z indented", T),
    # nginx / Apache common and combined
    (b'203.0.113.7 - - [24/Nov/2026:03:41:17 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.5"', T),
    (b'203.0.113.7 - alice [24/Nov/2026:03:41:17 -0800] "POST /login HTTP/1.1" 401 0', T + 8 * HOUR),
    (b'2001:db8::7 - - [24/Nov/2026:03:41:17 +0530] "GET /.env HTTP/1.1" 404 153', T - 5.5 * HOUR),
    (b'proxy.example.org - - [01/Jan/2027:00:00:00 +0000] "GET / HTTP/1.0" 200 1', utc(2027, 1, 1)),
    (b"\xff\xfe\x00 - - [24/Nov/2026:03:41:17 +0000] invalid UTF-8 before", T),
    (b"x" * 119 + b"[24/Nov/2026:03:41:17 +0000]", T),  # "[" at the last allowed offset
]


@pytest.mark.parametrize(("line", "expected"), ACCEPTED)
def test_accepted_formats(line: bytes, expected: float) -> None:
    when = LineClock(REFERENCE).time_of(line)
    assert isinstance(when, float)
    assert when == pytest.approx(expected, abs=1e-6)


# --- everything else has no time ---------------------------------------------------------

REJECTED: list[bytes] = [
    b"",
    b"   ",
    b"\n",
    b"hello world",
    b"Traceback (most recent call last):",
    b"    at com.example.Foo.bar(Foo.java:42)",
    b'  File "/srv/app.py", line 3, in <module>',
    # RFC 3164 look-alikes
    b"Feb 30 03:41:17 host no such day in any year",
    b"Nov 31 03:41:17 host",
    b"Nov 32 03:41:17 host",
    b"Nov 00 03:41:17 host",
    b"Nov  0 03:41:17 host",
    b"Nov 24 25:41:17 host",
    b"Nov 24 24:00:00 host",
    b"Nov 24 03:60:17 host",
    b"Nov 24 03:41:61 host",
    b"Nov 99 99:99:99 host",
    b"nov 24 03:41:17 host",
    b"NOV 24 03:41:17 host",
    b"Nox 24 03:41:17 host",
    b"Nov 24 03:41 host",
    b"Nov 24 3:41:17 host",
    b"Nov 24 03:41:17host",
    b"Nov 24 03:41:17Z host",
    b"Nov 24 03:41:17. host",
    b"Nov 24 03:41:17.1234567890 host",
    b"Nov 24 03-41-17 host",
    b"Nov\t24 03:41:17 host",
    b"Nov 24 2026 03:41:17 host",
    b"\x00Nov 24 03:41:17 host",
    # RFC 5424 look-alikes
    b"<34>1 - host app - - - no timestamp (NILVALUE)",
    b"<34>1 2026-11-24T25:00:00Z host",
    b"<34>1 2026-11-24 host",
    b"<34>",
    b"<34>1",
    b"<34>1 ",
    b"<>Nov 24 03:41:17 host",
    b"<3a>Nov 24 03:41:17 host",
    b"<1234>Nov 24 03:41:17 host",
    b"<34 Nov 24 03:41:17 host",
    b"<34>x 2026-11-24T03:41:17Z",
    b"<34>1234 2026-11-24T03:41:17Z",
    b"<34> Nov 24 03:41:17 host",
    # ISO look-alikes
    b"2026-13-24T03:41:17Z",
    b"2026-00-24T03:41:17Z",
    b"2026-02-29T00:00:00Z not a leap year",
    b"2026-11-31T03:41:17Z",
    b"2026-11-24T24:00:00Z",
    b"2026-11-24T03:41:17+24:00",
    b"2026-11-24T03:41:17+01:60",
    b"2026-11-24T03:41:17+01:",
    b"2026-11-24T03:41:17+1",
    b"2026-11-24T03:41:17-0a:00",
    b"2026-11-24T03:41:17+01:00x",
    b"2026-11-24X03:41:17Z",
    b"2026-11-24_03:41:17Z",
    b"2026-11-24T03:41 host",
    b"2026-11-24 host",
    b"2026-11-24T03:41:17.",
    b"2026-11-24T03:41:17.5x",
    b"2026-11-24T03:41:17ZZ",
    b"2026-11-24T03:41:171",
    b"2026-11-24T03:41:17.1234567890Z",
    b"2026-11-24T 3:41:17Z",
    b"2026-1a-24T03:41:17Z",
    b"0000-01-01T00:00:00Z",
    b"99999-11-24T03:41:17Z",
    b"+026-11-24T03:41:17Z",
    b"\xef\xbc\x92\xef\xbc\x90\xef\xbc\x92\xef\xbc\x96-11-24T03:41:17Z",  # full-width digits in UTF-8
    # CLF look-alikes
    b'203.0.113.7 - - [99/Foo/9999:99:99:99 +9999] "GET / HTTP/1.1"',
    b'203.0.113.7 - - [24/Nov/2026:03:41:17 +0000 "GET /"',
    b'203.0.113.7 - - [24/Nov/2026:03:41:17] "GET /"',
    b'203.0.113.7 - - [24/Nov/2026 03:41:17 +0000] "GET /"',
    b'203.0.113.7 - - [31/Feb/2026:03:41:17 +0000] "GET /"',
    b'203.0.113.7 - - [24/Nov/2026:03:41:17 +2400] "GET /"',
    b'203.0.113.7 - - [24/Nov/2026:03:41:17 +0060] "GET /"',
    b'203.0.113.7 - - [24/Nov/2026:03:41:17 *0000] "GET /"',
    b'203.0.113.7 - - [4/Nov/2026:03:41:17 +0000] "GET /"',
    b'203.0.113.7 - - [24/nov/2026:03:41:17 +0000] "GET /"',
    b'203.0.113.7 - - [24/Nov/20x6:03:41:17 +0000] "GET /"',
    b'203.0.113.7 - [x] [24/Nov/2026:03:41:17 +0000] only the first "[" counts',
    b"x" * 120 + b"[24/Nov/2026:03:41:17 +0000] too far from the start",
    b"Nov 99 03:41:17 [24/Nov/2026:03:41:17 +0000] a broken start is not rescued",
    b"[",
    b"[" * 200,
]


@pytest.mark.parametrize("line", REJECTED)
def test_rejected_lines_have_no_time(line: bytes) -> None:
    assert LineClock(REFERENCE).time_of(line) is None


def test_only_the_head_of_a_line_is_read() -> None:
    clock = LineClock(REFERENCE)
    assert clock.time_of(b" " * (HEAD - 10) + b"Nov 24 03:41:17 host") is None
    assert clock.time_of(b" " * (HEAD - 15) + b"Nov 24 03:41:17 host") == T


# --- RFC 3164: the year comes from the reference --------------------------------------------

YEARS: list[tuple[float, bytes, float | None]] = [
    # Dec lines in a January-modified file: last year; Jan lines: this year.
    (utc(2027, 1, 2, 12), b"Dec 31 23:59:59 host", utc(2026, 12, 31, 23, 59, 59)),
    (utc(2027, 1, 2, 12), b"Jan  1 00:00:01 host", utc(2027, 1, 1, 0, 0, 1)),
    (utc(2027, 1, 2, 12), b"Jun 15 08:00:00 host", utc(2026, 6, 15, 8)),
    # Up to 31 days after the reference is still this year (clock skew, late mtime).
    (utc(2027, 1, 2, 12), b"Feb  2 12:00:00 host", utc(2027, 2, 2, 12)),
    (utc(2027, 1, 2, 12), b"Feb  2 12:00:01 host", utc(2026, 2, 2, 12, 0, 1)),
    (utc(2027, 1, 2, 12), b"Feb  2 12:00:00.5 host", utc(2026, 2, 2, 12, 0, 0, 500000)),
    # Jan lines in a December-modified file: the same year; Dec lines too.
    (utc(2026, 12, 15), b"Jan  5 10:00:00 host", utc(2026, 1, 5, 10)),
    (utc(2026, 12, 15), b"Dec 31 23:59:59 host", utc(2026, 12, 31, 23, 59, 59)),
    (utc(2026, 12, 15), b"Dec 14 23:59:59 host", utc(2026, 12, 14, 23, 59, 59)),
    # Feb 29: in a leap reference year, in the leap year before, or nowhere.
    (utc(2028, 3, 10), b"Feb 29 12:00:00 host", utc(2028, 2, 29, 12)),
    (utc(2028, 2, 1), b"Feb 29 12:00:00 host", utc(2028, 2, 29, 12)),
    (utc(2029, 3, 10), b"Feb 29 12:00:00 host", utc(2028, 2, 29, 12)),
    (utc(2028, 1, 10), b"Feb 29 12:00:00 host", None),  # 2028 is too far ahead, 2027 has none
    (utc(2027, 3, 1), b"Feb 29 12:00:00 host", None),
    (utc(2027, 3, 1), b"Feb 28 12:00:00 host", utc(2027, 2, 28, 12)),
]


@pytest.mark.parametrize(("reference", "line", "expected"), YEARS)
def test_year_inference(reference: float, line: bytes, expected: float | None) -> None:
    assert LineClock(reference).time_of(line) == expected


@pytest.mark.parametrize("reference", [math.nan, math.inf, -math.inf, 1e300, -1e300, -1.0, 0.0, 253402300799.0])
def test_any_reference_is_usable(reference: float) -> None:
    clock = LineClock(reference)
    assert clock.time_of(b"2026-11-24T03:41:17Z x") == T
    when = clock.time_of(b"Nov 24 03:41:17 host")
    assert when is None or math.isfinite(when)


def test_reference_year_at_the_extremes() -> None:
    assert LineClock(math.nan).time_of(b"Jan  2 00:00:00 host") == utc(1970, 1, 2)
    assert LineClock(1e300).time_of(b"Jan  2 00:00:00 host") == utc(9999, 1, 2)


# --- tz_offset_s: local time of formats without a zone ------------------------------------------

TZ_CASES: list[tuple[int, float, bytes, float]] = [
    (HOUR, REFERENCE, b"2026-11-24 03:41:17 no zone", T - HOUR),
    (-5 * HOUR, REFERENCE, b"2026-11-24T03:41:17 no zone", T + 5 * HOUR),
    (HOUR, REFERENCE, b"2026-11-24T03:41:17Z", T),
    (HOUR, REFERENCE, b"2026-11-24T03:41:17+02:00", T - 2 * HOUR),
    (HOUR, REFERENCE, b"Nov 24 03:41:17 host", T - HOUR),
    (HOUR, REFERENCE, b"<34>Nov 24 03:41:17 host", T - HOUR),
    (HOUR, REFERENCE, b"<34>1 2026-11-24T03:41:17 host no zone", T - HOUR),
    (HOUR, REFERENCE, b"<34>1 2026-11-24T03:41:17Z host", T),
    (HOUR, REFERENCE, b'203.0.113.7 - - [24/Nov/2026:03:41:17 +0000] "GET /"', T),
    # The year is reckoned in local time: at 02:00 UTC on Jan 1 it is still 2026 at UTC-5.
    (-5 * HOUR, utc(2027, 1, 1, 2), b"Dec 31 20:00:00 host", utc(2027, 1, 1, 1)),
    (0, utc(2027, 1, 1, 2), b"Dec 31 20:00:00 host", utc(2026, 12, 31, 20)),
    (0, utc(2026, 12, 31, 22), b"Jan  1 01:00:00 host", utc(2026, 1, 1, 1)),
    (5 * HOUR, utc(2026, 12, 31, 22), b"Jan  1 01:00:00 host", utc(2026, 12, 31, 20)),
]


@pytest.mark.parametrize(("offset", "reference", "line", "expected"), TZ_CASES)
def test_tz_offset(offset: int, reference: float, line: bytes, expected: float) -> None:
    assert LineClock(reference, tz_offset_s=offset).time_of(line) == expected


@pytest.mark.parametrize("offset", [86400, -86400, 10**9])
def test_tz_offset_must_be_within_a_day(offset: int) -> None:
    with pytest.raises(ValueError):
        LineClock(REFERENCE, tz_offset_s=offset)


# --- one file holding several formats --------------------------------------------------------

MIXED: list[tuple[bytes, float | None]] = [
    (b"Nov 24 03:41:17 host sshd[1]: a", T),
    (b"2026-11-24T03:41:18Z host app: b", T + 1),
    (b"<34>1 2026-11-24T04:41:19+01:00 host app - - - c", T + 2),
    (b'203.0.113.7 - - [24/Nov/2026:03:41:20 +0000] "GET / HTTP/1.1" 200 1', T + 3),
    (b"    continuation", None),
    (b"<13>Nov 24 03:41:21 host d", T + 4),
    (b"2026-11-24 03:41:22,500 - root - INFO - e", T + 5.5),
]


def test_mixed_formats_in_one_file() -> None:
    clock = LineClock(REFERENCE)
    assert [clock.time_of(line) for line, _ in MIXED] == [expected for _, expected in MIXED]


def test_date_cache_stays_bounded() -> None:
    clock = LineClock(REFERENCE)
    start = datetime(2000, 1, 1, tzinfo=UTC)
    for day in range(3 * timestamps.CACHE_MAX):
        moment = start + timedelta(days=day)
        line = moment.strftime("%Y-%m-%dT%H:%M:%SZ x").encode()
        assert clock.time_of(line) == moment.timestamp()
    assert len(clock._iso_dates) <= timestamps.CACHE_MAX


# --- last_time_before: looking back from a continuation line -----------------------------------

LOOK_BACK: list[tuple[bytes, bool, float | None]] = [
    (b"Nov 24 03:41:17 a\nNov 24 03:41:18 b\n  at x\n  at y\n", False, T + 1),
    (b"Nov 24 03:41:17 a\nNov 24 03:41:18 b\n  at x\n  at y", False, T + 1),  # no final newline
    (b"Nov 24 03:41:17 a\n", False, T),
    (b"Nov 24 03:41:17 a", False, T),
    (b"Nov 24 03:41:17 a\n\n\n", False, T),
    (b"Nov 24 03:41:17 a\r\n  at x\r\n", False, T),
    (b"Nov 24 03:41:17 a\nNov 24 03:41:18 b\n", True, T + 1),
    (b"Nov 24 03:41:17 a fragment?\n  at x\n", True, None),  # first line may be a cut one: ignored
    (b"Nov 24 03:41:17 a fragment?\n  at x\n", False, T),
    (b"  at x\n  at y\n", False, None),
    (b"\n", False, None),
    (b"", False, None),
    (b"", True, None),
    (b"Nov 24 03:41:17 " + b"x" * 100_000 + b"\n  at x\n", False, T),
    (b"2026-11-24T03:41:17Z a\n" + b"  at frame\n" * 50_000, False, T),
    (b"cut\n2026-11-24T03:41:17Z a\n" + b"  at frame\n" * 50_000, True, T),
]


@pytest.mark.parametrize(("data", "partial_first", "expected"), LOOK_BACK)
def test_last_time_before(data: bytes, partial_first: bool, expected: float | None) -> None:
    assert LineClock(REFERENCE).last_time_before(data, partial_first=partial_first) == expected


def test_last_time_before_defaults_to_a_complete_first_line() -> None:
    assert LineClock(REFERENCE).last_time_before(b"Nov 24 03:41:17 a\n  at x\n") == T


# --- the window, as the grep worker applies it (workers/search.py) --------------------------

FILE = [
    b"  preamble before any stamp",  # 1: unknown time
    b"Nov 24 03:41:17 host app: start",  # 2: T
    b"Nov 24 03:41:20 host app: Traceback (most recent call last):",  # 3: T+3
    b'  File "app.py", line 3, in <module>',  # 4: inherits T+3
    b"ValueError: boom",  # 5: inherits T+3
    b"Nov 24 03:41:30 host app: later",  # 6: T+13
    b"",  # 7: inherits T+13
    b"garbage Nov 24 03:41:40",  # 8: not at the start, inherits T+13
]

WINDOWS: list[tuple[float | None, float | None, list[int]]] = [
    (None, None, [1, 2, 3, 4, 5, 6, 7, 8]),
    (T + 3, None, [3, 4, 5, 6, 7, 8]),
    (None, T + 3, [2, 3, 4, 5]),
    (T + 1, T + 12, [3, 4, 5]),
    (T, T, [2]),  # both bounds inclusive
    (T + 13, T + 13, [6, 7, 8]),
    (T + 3.5, T + 12.5, []),
    (T - 1e6, T + 1e6, [2, 3, 4, 5, 6, 7, 8]),  # the preamble has no time: outside any window
    (T, T - 0.001, []),
    (T + 0.001, None, [3, 4, 5, 6, 7, 8]),
    (None, T + 12.999, [2, 3, 4, 5]),
]
EVERY_LINE = "^"
# Not the stamped lines: each matched line's time is looked back for in the file.
CONTINUATIONS = "^  |^ValueError|^$|^garbage"


def search_lines(tmp_path: Path, pattern: str, since: float | None, until: float | None) -> list[int]:
    """The line numbers the grep worker's search code returns for FILE, run here unconfined."""
    log = tmp_path / "app.log"
    log.write_bytes(b"\n".join(FILE) + b"\n")
    request = SearchRequest(
        pattern=pattern,
        max_lines=100,
        max_line_bytes=4096,
        files=[SearchFile(mtime=REFERENCE)],
        since=since,
        until=until,
    )
    sent: list[object] = []
    search(request, [os.open(log, os.O_RDONLY)], [GREP], sent.append)
    assert isinstance(sent[-1], Done), sent[-1]
    return [line.line_no for message in sent if isinstance(message, Lines) for line in message.lines]


@pytest.mark.parametrize(("since", "until", "kept"), WINDOWS)
def test_window_on_every_line(tmp_path: Path, since: float | None, until: float | None, kept: list[int]) -> None:
    """Each matched line follows the one before: a line without a stamp takes the previous line's time."""
    assert search_lines(tmp_path, EVERY_LINE, since, until) == kept


@pytest.mark.parametrize(("since", "until", "kept"), WINDOWS)
def test_window_on_continuation_lines_only(
    tmp_path: Path, since: float | None, until: float | None, kept: list[int]
) -> None:
    """Matches whose stamped line was not matched: their time is read back from the file."""
    candidates = {1, 4, 5, 7, 8}
    assert search_lines(tmp_path, CONTINUATIONS, since, until) == [number for number in kept if number in candidates]


# --- hostile input never raises ------------------------------------------------------------------


def _check(clock: LineClock, line: bytes) -> None:
    when = clock.time_of(line)
    assert when is None or (isinstance(when, float) and math.isfinite(when))


def test_random_bytes() -> None:
    rng = random.Random(20261124)
    clock = LineClock(REFERENCE)
    for _ in range(20_000):
        _check(clock, rng.randbytes(rng.randrange(0, 200)))


def test_random_bytes_from_a_stamp_alphabet() -> None:
    # Plain random bytes rarely get past the first check; these reach every parser.
    rng = random.Random(7)
    alphabet = b"0123456789-:T Z+.,<>[]/NovFebJan\t\n\x00\xff"
    clock = LineClock(REFERENCE)
    for _ in range(50_000):
        _check(clock, bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 48))))


def test_every_truncation_and_mutation_of_valid_lines() -> None:
    rng = random.Random(3164)
    clock = LineClock(REFERENCE)
    for line, _ in ACCEPTED:
        for end in range(len(line) + 1):
            _check(clock, line[:end])
        for _ in range(300):
            mutated = bytearray(line[:60])
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(len(mutated) + 1)
                action = rng.randrange(3)
                if action == 0 and at < len(mutated):
                    mutated[at] = rng.randrange(256)
                elif action == 1 and at < len(mutated):
                    del mutated[at]
                else:
                    mutated.insert(at, rng.randrange(256))
            _check(clock, bytes(mutated))


HUGE = 1 << 20


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"Nov 24 03:41:17 " + b"A" * HUGE, T),
        (b'203.0.113.7 - - [24/Nov/2026:03:41:17 +0000] "GET /' + b"a" * HUGE, T),
        (b" " * HUGE, None),
        (b" " * HUGE + b"Nov 24 03:41:17", None),
        (b"\x00" * HUGE, None),
        (b"9" * HUGE, None),
        (b"[" * HUGE, None),
        (b"<" * HUGE, None),
        (b"2026-11-24T03:41:17." + b"9" * HUGE, None),
        (b"\n" * HUGE, None),
    ],
)
def test_megabyte_lines(line: bytes, expected: float | None) -> None:
    clock = LineClock(REFERENCE)
    started = time.perf_counter()
    assert clock.time_of(line) == expected
    assert clock.last_time_before(line) == expected
    assert time.perf_counter() - started < 5  # only the head is parsed (the look-back walks the newlines)


def test_last_time_before_random_chunks() -> None:
    rng = random.Random(5424)
    clock = LineClock(REFERENCE)
    pieces = [line for line, _ in ACCEPTED] + REJECTED
    for _ in range(2000):
        data = b"\n".join(rng.choice(pieces) for _ in range(rng.randrange(0, 20)))
        cut = rng.randrange(len(data) + 1)
        for partial in (False, True):
            when = clock.last_time_before(data[cut:], partial_first=partial)
            assert when is None or math.isfinite(when)


# --- rough speed, printed with -s -----------------------------------------------------------------


def _bsd(d: datetime) -> str:
    return f"{d:%b} {d.day:2d} {d:%H:%M:%S}"


# Each writes a line stamped with the given UTC instant plus the fraction next to it.
SPEED_FORMATS: dict[str, tuple[Callable[[datetime], str], float]] = {
    "rfc3164": (lambda d: f"{_bsd(d)} host sshd[812]: Failed password for root from 203.0.113.7 port 22 ssh2", 0.0),
    "rfc3164 <pri> .frac": (lambda d: f"<38>{_bsd(d)}.123 host sshd[812]: Accepted publickey for deploy", 0.123),
    "rfc5424": (
        lambda d: f"<34>1 {d + timedelta(hours=1):%Y-%m-%dT%H:%M:%S}.123456+01:00 host app 4242 ID47 - msg",
        0.123456,
    ),
    "iso Z": (lambda d: f"{d:%Y-%m-%dT%H:%M:%S}Z host app[1]: msg", 0.0),
    "iso .frac +hh:mm": (lambda d: f"{d + timedelta(hours=2):%Y-%m-%dT%H:%M:%S}.5+02:00 host app[1]: msg", 0.5),
    "python logging": (lambda d: f"{d:%Y-%m-%d %H:%M:%S},123 - root - INFO - user logged in", 0.123),
    "nginx combined": (
        lambda d: (
            f'203.0.113.7 - - [{d - timedelta(hours=8):%d/%b/%Y:%H:%M:%S} -0800] "GET / HTTP/1.1" 200 612 "-" "curl/8"'
        ),
        0.0,
    ),
    "no stamp": (lambda d: "    at com.example.service.Handler.process(Handler.java:142)", math.nan),
}
SPEED_LINES = 200_000


@pytest.mark.parametrize("name", list(SPEED_FORMATS))
def test_speed(name: str) -> None:
    """Lines 3 s apart (a week of log: a few distinct dates, as in a real file); figures are printed, not asserted."""
    write, fraction = SPEED_FORMATS[name]
    start = datetime(2026, 11, 24, tzinfo=UTC)
    moments = [start + timedelta(seconds=3 * i) for i in range(SPEED_LINES)]
    lines = [write(moment).encode() for moment in moments]
    time_of = LineClock(REFERENCE).time_of
    started = time.perf_counter()
    results = [time_of(line) for line in lines]
    elapsed = time.perf_counter() - started
    print(
        f"\n  time_of {name:22s} {SPEED_LINES / elapsed / 1e6:5.2f} M lines/s"
        f"  ({elapsed / SPEED_LINES * 1e9:5.0f} ns/line)"
    )
    if math.isnan(fraction):
        assert results == [None] * SPEED_LINES
        return
    for moment, result in zip(moments[::997], results[::997], strict=True):
        assert result == pytest.approx(moment.timestamp() + fraction, abs=1e-6)


# --- broker: the since / until arguments ------------------------------------------------------------

NOW = utc(2026, 11, 24, 12)

ARGUMENTS_ACCEPTED: list[tuple[str, float]] = [
    ("2026-11-24", utc(2026, 11, 24)),
    ("2026-11-24T08:00", utc(2026, 11, 24, 8)),
    ("2026-11-24T08:00:00", utc(2026, 11, 24, 8)),
    ("2026-11-24T08:00:00Z", utc(2026, 11, 24, 8)),
    ("2026-11-24t08:00:00z", utc(2026, 11, 24, 8)),
    ("2026-11-24 08:00:00", utc(2026, 11, 24, 8)),
    ("2026-11-24T08:00:00+01:00", utc(2026, 11, 24, 7)),
    ("2026-11-24T08:00+01:00", utc(2026, 11, 24, 7)),
    ("2026-11-24T08:00:00+0100", utc(2026, 11, 24, 7)),
    ("2026-11-24T08:00-05:30", utc(2026, 11, 24, 13, 30)),
    ("2026-11-24T00:30:00+01:00", utc(2026, 11, 23, 23, 30)),
    ("2026-11-24T08:00:00.5Z", utc(2026, 11, 24, 8) + 0.5),
    ("2026-11-24T08:00:00,25Z", utc(2026, 11, 24, 8) + 0.25),
    ("2026-11-24T08:00:00.123456789+01:00", utc(2026, 11, 24, 7) + 0.123456789),
    ("2024-02-29", utc(2024, 2, 29)),
    ("1970-01-01", 0.0),
    ("1970-01-01T01:00:00+01:00", 0.0),
    ("9999-12-31T23:59:59Z", utc(9999, 12, 31, 23, 59, 59)),
    ("now", NOW),
    ("-90s", NOW - 90),
    ("-1s", NOW - 1),
    ("-30m", NOW - 30 * 60),
    ("-2h", NOW - 2 * HOUR),
    ("-7d", NOW - 7 * 86400),
    ("-2w", NOW - 14 * 86400),
    ("-007d", NOW - 7 * 86400),
    ("-3653d", NOW - 3653 * 86400),  # ten years, leap days included
    ("-87672h", NOW - 3653 * 86400),
    ("-521w", NOW - 521 * 7 * 86400),
]


@pytest.mark.parametrize(("value", "expected"), ARGUMENTS_ACCEPTED)
def test_time_argument_accepted(value: str, expected: float) -> None:
    assert parse_time_argument(value, "since", NOW) == pytest.approx(expected, abs=1e-6)


ARGUMENTS_REFUSED: list[tuple[object, str]] = [
    (42, "since must be a string"),
    (1.5, "since must be a string"),
    (True, "since must be a string"),
    (None, "since must be a string"),
    (b"2026-11-24", "since must be a string"),
    (["-2h"], "since must be a string"),
    ({"since": "-2h"}, "since must be a string"),
    ("x" * (MAX_LENGTH + 1), "too long"),
    ("2026-11-24T08:00:00.123456789+01:00" + " " * 6, "too long"),
    ("2h", "minus sign"),
    ("+2h", "minus sign"),
    ("-2", "minus sign"),
    ("-2x", "minus sign"),
    ("-2H", "minus sign"),
    ("-2hours", "minus sign"),
    ("-0s", "between 1 second and 10 years"),
    ("-0h", "between 1 second and 10 years"),
    ("-3654d", "between 1 second and 10 years"),
    ("-87673h", "between 1 second and 10 years"),
    ("-522w", "between 1 second and 10 years"),
    ("-999999999999w", "between 1 second and 10 years"),
    ("2026", "must be an ISO 8601 date"),
    ("90", "must be an ISO 8601 date"),
    ("-2 h", "must be an ISO 8601 date"),
    ("- 2h", "must be an ISO 8601 date"),
    ("--2h", "must be an ISO 8601 date"),
    ("-2.5h", "must be an ISO 8601 date"),
    ("-1234567890123s", "must be an ISO 8601 date"),
    ("1969-12-31", "year must be between 1970 and 9999"),
    ("0000-01-01", "year must be between 1970 and 9999"),
    ("10000-01-01", "must be an ISO 8601 date"),
    ("2026-13-01", "not a valid date"),
    ("2026-00-10", "not a valid date"),
    ("2026-02-29", "not a valid date"),
    ("2026-11-31", "not a valid date"),
    ("2026-11-24T24:00", "not a valid date"),
    ("2026-11-24T08:60", "not a valid date"),
    ("2026-11-24T08:00:60", "not a valid date"),
    ("2026-11-24T08:00+24:00", "not a valid date"),
    ("2026-11-24T08:00+01:60", "not a valid date"),
    ("1970-01-01T00:30:00+01:00", "must fall between 1970"),
    ("9999-12-31T23:59:59-01:00", "must fall between 1970"),
    ("", "must be an ISO 8601 date"),
    ("now ", "must be an ISO 8601 date"),
    ("NOW", "must be an ISO 8601 date"),
    ("today", "must be an ISO 8601 date"),
    (" -2h", "must be an ISO 8601 date"),
    ("-2h\n", "must be an ISO 8601 date"),
    ("2026-11-24\n", "must be an ISO 8601 date"),
    ("2026-11-24Z", "must be an ISO 8601 date"),
    ("2026-11-24T08", "must be an ISO 8601 date"),
    ("2026-11-24T8:00", "must be an ISO 8601 date"),
    ("2026/11/24", "must be an ISO 8601 date"),
    ("24/Nov/2026", "must be an ISO 8601 date"),
    ("2026-11-24T08:00:00.1234567890Z", "must be an ISO 8601 date"),
    ("2026-11-24T08:00:00.Z", "must be an ISO 8601 date"),
    ("2026-11-24T08:00:00+1", "must be an ISO 8601 date"),
    ("\uff12\uff10\uff12\uff16-11-24", "must be an ISO 8601 date"),  # full-width digits
    ("\u0662\u0660\u0662\u0666-11-24", "must be an ISO 8601 date"),  # Arabic-Indic digits
    ("\u22122h", "must be an ISO 8601 date"),  # U+2212 MINUS SIGN
    ("\x00", "must be an ISO 8601 date"),
]


@pytest.mark.parametrize(("value", "needle"), ARGUMENTS_REFUSED)
def test_time_argument_refused(value: object, needle: str) -> None:
    with pytest.raises(WindowError) as raised:
        parse_time_argument(value, "since", NOW)
    message = str(raised.value)
    assert needle in message
    assert message.startswith("since")
    assert isinstance(raised.value, ValueError)


def test_refusals_do_not_echo_the_value() -> None:
    for value in ("<script>alert(1)</script>", "2026-11-24T99:99:99<b>", "-9999999w<x>"):
        with pytest.raises(WindowError) as raised:
            parse_time_argument(value, "until", NOW)
        assert "<" not in str(raised.value) and str(raised.value).startswith("until")


@pytest.mark.parametrize(("now", "value"), [(math.nan, "now"), (math.inf, "now"), (100.0, "-1h"), (math.nan, "-1h")])
def test_results_outside_1970_to_9999_are_refused(now: float, value: str) -> None:
    with pytest.raises(WindowError, match="must fall between"):
        parse_time_argument(value, "since", now)


WINDOW_ACCEPTED: list[tuple[object, object, tuple[float | None, float | None]]] = [
    (None, None, (None, None)),
    ("-2h", None, (NOW - 2 * HOUR, None)),
    (None, "now", (None, NOW)),
    ("-2h", "-1h", (NOW - 2 * HOUR, NOW - HOUR)),
    ("2026-11-24", "2026-11-24T00:00:00Z", (utc(2026, 11, 24), utc(2026, 11, 24))),
    ("2026-11-23", "now", (utc(2026, 11, 23), NOW)),
    ("-1d", "2030-01-01", (NOW - 86400, utc(2030, 1, 1))),
]


@pytest.mark.parametrize(("since", "until", "expected"), WINDOW_ACCEPTED)
def test_window_accepted(since: object, until: object, expected: tuple[float | None, float | None]) -> None:
    assert parse_window(since, until, NOW) == expected


WINDOW_REFUSED: list[tuple[object, object, str]] = [
    ("-1h", "-2h", "since is after until"),
    ("now", "-1s", "since is after until"),
    ("2026-11-24T00:00:00.5Z", "2026-11-24", "since is after until"),
    ("2026-11-25", "2026-11-24T23:59:59+01:00", "since is after until"),
    (42, None, "since must be a string"),
    (None, 42, "until must be a string"),
    ("-2h", "tomorrow", "until must be an ISO 8601 date"),
    ("yesterday", "now", "since must be an ISO 8601 date"),
    ("-2h", "1969-01-01", "until: the year must be"),
    ("", "", "since must be an ISO 8601 date"),
]


@pytest.mark.parametrize(("since", "until", "needle"), WINDOW_REFUSED)
def test_window_refused(since: object, until: object, needle: str) -> None:
    with pytest.raises(WindowError) as raised:
        parse_window(since, until, NOW)
    assert needle in str(raised.value)


def test_window_bounds_match_the_worker(tmp_path: Path) -> None:
    """A window parsed in the broker selects the worker's lines as intended."""
    since, until = parse_window("2026-11-24T03:41:20Z", "2026-11-24T04:41:30+01:00", NOW)
    assert search_lines(tmp_path, EVERY_LINE, since, until) == [3, 4, 5, 6, 7, 8]
