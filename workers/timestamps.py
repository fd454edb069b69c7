"""Timestamps of log lines, for the since/until window of query_logs (worker side).

Stdlib only, and built for speed: it runs on every matched line. A stamp is
recognised at fixed byte positions at the start of the line (after optional
leading whitespace); its parts are validated by dict lookups of fixed slices
("03:41" -> seconds), and the date part is cached per distinct date. At most
the first HEAD bytes of a line are ever looked at, so a huge line costs no
more than a short one. Any bytes are accepted: nothing here raises.

Formats:
  RFC 3164  [<PRI>]Nov 24 03:41:17[.fff] ...          local time, year inferred
  RFC 5424  <PRI>1 2026-11-24T03:41:17.123+01:00 ...  "-" (NILVALUE): no stamp
  ISO 8601  2026-11-24T03:41:17[.f|,f][Z|+hh:mm|+hhmm|+hh] ...
            ("T", "t" or a space between date and time; no zone: local time)
  CLF       ... [24/Nov/2026:02:31:12 +0000] ...      first "[" in 120 bytes
A stamp must not run on into a letter or digit ("03:41:17x" is no stamp).
A line that starts like a stamp but holds an impossible one (Feb 30, 25:00,
month 13) has no time: it is not looked at for a CLF stamp either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date

HEAD = 160  # bytes of a line ever looked at
BRACKET_SPAN = 120  # a CLF "[" must be within this many bytes of the start
FUTURE_DAYS = 31  # RFC 3164: how far after the reference a stamp may be (year inference)
CACHE_MAX = 4096  # distinct dates remembered per clock (hostile input cannot grow it)
MAX_FRACTION = 9  # digits of a fractional second

_DAY = 86400
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MIN_T = float((1 - _EPOCH_ORDINAL) * _DAY)  # 0001-01-01
_MAX_T = float((date.max.toordinal() + 1 - _EPOCH_ORDINAL) * _DAY - 1)  # 9999-12-31T23:59:59
_NO_DATE = -math.inf  # cached for a key that is no date, so it is parsed once only

_MONTHS = {
    name.encode(): number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
    )
}
_HHMM = {f"{h:02d}:{m:02d}".encode(): h * 3600 + m * 60 for h in range(24) for m in range(60)}
_SECONDS = {f"{s:02d}".encode(): s for s in range(61)}  # 60: a leap second
_HOURS = {f"{h:02d}".encode(): h for h in range(24)}
_MINUTES = {f"{m:02d}".encode(): m for m in range(60)}
_BSD_DAYS = {**{f" {d}".encode(): d for d in range(1, 10)}, **{f"{d:02d}".encode(): d for d in range(1, 32)}}
_ALNUM = tuple(c < 128 and chr(c).isalnum() for c in range(256))
_POW10 = tuple(10.0**k for k in range(MAX_FRACTION + 1))
_ISO_SEPARATORS = b"Tt "


def _midnight(year: int, month: int, day: int) -> float:
    """Unix seconds of 00:00 on that date (read as UTC), _NO_DATE if there is no such date."""
    try:
        return float((date(year, month, day).toordinal() - _EPOCH_ORDINAL) * _DAY)
    except ValueError:
        return _NO_DATE


def _year_of(seconds: float) -> int:
    return date.fromordinal(int(seconds // _DAY) + _EPOCH_ORDINAL).year


def _clamp(seconds: float) -> float:
    # An mtime can be set to anything: keep it inside what date() can represent.
    if math.isnan(seconds):
        return 0.0
    return min(max(seconds, _MIN_T + _DAY), _MAX_T - _DAY)


def _cached(cache: dict[bytes, float], key: bytes, parse: Callable[[bytes], float]) -> float:
    """parse(key) (a midnight or _NO_DATE), computed once per distinct key."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= CACHE_MAX:
            cache.clear()
        value = cache[key] = parse(key)
    return value


def _iso_date(key: bytes) -> float:
    """Midnight of b"2026-11-24", _NO_DATE if malformed or impossible."""
    if key[4] != 45 or key[7] != 45 or not (key[:4].isdigit() and key[5:7].isdigit() and key[8:10].isdigit()):
        return _NO_DATE  # bytes.isdigit() is ASCII-only, so int() below only ever sees 0-9
    return _midnight(int(key[:4]), int(key[5:7]), int(key[8:10]))


def _clf_date(key: bytes) -> float:
    """Midnight of b"24/Nov/2026", _NO_DATE if malformed or impossible."""
    month = _MONTHS.get(key[3:6])
    if month is None or key[2] != 47 or key[6] != 47 or not (key[:2].isdigit() and key[7:11].isdigit()):
        return _NO_DATE
    return _midnight(int(key[7:11]), month, int(key[:2]))


def _tail(s: bytes, i: int, zoned: bool, default_offset: int) -> float | None:
    """What follows the seconds at s[i:]: fraction minus UTC offset, None if malformed.

    An optional ".123" or ",123" fraction, then (if `zoned`) an optional zone;
    the stamp must then end: no letter or digit may follow.
    """
    n = len(s)
    fraction = 0.0
    if i < n and (s[i] == 46 or s[i] == 44):  # "." or ","
        run = s[i + 1 : i + 1 + MAX_FRACTION]
        digits = len(run) - len(run.lstrip(b"0123456789"))  # C-speed digit count
        if not digits:
            return None
        fraction = int(run[:digits]) / _POW10[digits]
        i += 1 + digits
    offset = default_offset
    if zoned and i < n:
        c = s[i]
        if c == 90 or c == 122:  # "Z" / "z"
            offset, i = 0, i + 1
        elif c == 43 or c == 45:  # "+" / "-"
            zone = _zone(s, i)
            if zone is None:
                return None
            offset, i = zone
    if i < n and _ALNUM[s[i]]:
        return None
    return fraction - offset


def _zone(s: bytes, i: int) -> tuple[int, int] | None:
    """(offset seconds, end index) of "+hh:mm", "+hhmm" or "+hh" at s[i]."""
    hours = _HOURS.get(s[i + 1 : i + 3])
    if hours is None:
        return None
    minutes_at = i + 4 if s[i + 3 : i + 4] == b":" else i + 3
    minutes = _MINUTES.get(s[minutes_at : minutes_at + 2])
    if minutes is None:
        if minutes_at == i + 4:  # "+01:" needs its minutes
            return None
        minutes, end = 0, i + 3
    else:
        end = minutes_at + 2
    offset = hours * 3600 + minutes * 60
    return (offset if s[i] == 43 else -offset), end


class LineClock:
    """Timestamps of successive lines of ONE log file.

    `reference`: unix time the file was last modified (its mtime); RFC 3164
    stamps carry no year, and it is inferred from this reference: the year is
    the reference's own year, unless the stamp would then fall more than
    FUTURE_DAYS (31) days after the reference, in which case it is the
    previous year (a file modified on 2027-01-02 holding "Dec 31 23:59:59" ->
    2026; holding "Jan  1 00:00:01" -> 2027). If the date does not exist in
    the chosen year (Feb 29), the previous year is tried; if it exists in
    neither of the two, the line has no time. All of this is reckoned in the
    host's local time (reference + tz_offset_s).

    `tz_offset_s`: UTC offset of the host's local time (east positive), for
    stamps without a zone (RFC 3164, ISO without offset); default UTC.
    """

    def __init__(self, reference: float, tz_offset_s: int = 0) -> None:
        if not -_DAY < tz_offset_s < _DAY:
            raise ValueError("tz_offset_s must be within a day")
        self._tz = tz_offset_s
        local_reference = _clamp(reference) + tz_offset_s
        self._year = _year_of(local_reference)
        self._latest = local_reference + FUTURE_DAYS * _DAY  # latest local time a 3164 stamp may have
        self._bsd_dates: dict[bytes, tuple[float, float]] = {}  # (this year, last year)
        self._iso_dates: dict[bytes, float] = {}
        self._clf_dates: dict[bytes, float] = {}

    def time_of(self, line: bytes) -> float | None:
        """Unix seconds (UTC) of the line's own timestamp, None if it has none."""
        s = line[:HEAD]
        if not s:
            return None
        c = s[0]
        if c == 32 or c == 9:
            s = s.lstrip()
            if not s:
                return None
            c = s[0]
        if c == 60:  # "<"
            return self._after_priority(s)
        if 48 <= c <= 57 and s[4:5] == b"-":
            return self._iso(s)
        if s[:3] in _MONTHS and s[3:4] == b" ":
            return self._bsd(s)
        return self._clf(s)

    def last_time_before(self, data: bytes, partial_first: bool = False) -> float | None:
        """Time of the last line in `data` that has a stamp, scanning back from its end.

        `data` is the file's bytes just before some line (ending with the
        newline of the previous line). Set `partial_first` when it was read
        from an arbitrary offset: its first line may then be the tail of a
        longer one and is not looked at. None if no line in it has a stamp.
        """
        end = len(data)
        if end and data[end - 1] == 10:
            end -= 1
        while end >= 0:
            start = data.rfind(b"\n", 0, end) + 1
            if start == 0 and partial_first:
                return None
            when = self.time_of(data[start : min(end, start + HEAD)])
            if when is not None:
                return when
            end = start - 1
        return None

    # --- one parser per format; `s` starts at the stamp and holds at most HEAD bytes ----------

    def _after_priority(self, s: bytes) -> float | None:
        """RFC 5424 or RFC 3164 (or a bare ISO stamp) after "<PRI>"."""
        close = s.find(b">", 1, 5)
        if close < 2 or not s[1:close].isdigit():
            return None
        rest = s[close + 1 :]
        if rest[:2] == b"1 ":  # the only RFC 5424 version so far: skip the general case
            return self._iso(rest[2:])
        if rest[:1].isdigit():
            if rest[4:5] == b"-":  # "<34>2026-11-24T..." (rsyslog forwarding format)
                return self._iso(rest)
            space = rest.find(b" ", 1, 4)  # VERSION is 1 to 3 digits
            if space < 0 or not rest[:space].isdigit():
                return None
            return self._iso(rest[space + 1 :])  # "-" (NILVALUE) is too short to be a stamp: None
        if rest[:3] in _MONTHS and rest[3:4] == b" ":
            return self._bsd(rest)
        return None

    def _iso(self, s: bytes) -> float | None:
        if len(s) < 19:
            return None
        day = _cached(self._iso_dates, s[:10], _iso_date)
        hhmm = _HHMM.get(s[11:16])
        second = _SECONDS.get(s[17:19])
        if day == _NO_DATE or hhmm is None or second is None or s[10] not in _ISO_SEPARATORS or s[16] != 58:
            return None
        tail = _tail(s, 19, True, self._tz)
        return None if tail is None else day + hhmm + second + tail

    def _bsd(self, s: bytes) -> float | None:
        """RFC 3164 "Nov 24 03:41:17" (day may be space-padded), with the year inferred."""
        if len(s) < 15:
            return None
        key = s[:6]
        days = self._bsd_dates.get(key)
        if days is None:
            if len(self._bsd_dates) >= CACHE_MAX:
                self._bsd_dates.clear()
            days = self._bsd_dates[key] = self._bsd_date(key)
        hhmm = _HHMM.get(s[7:12])
        second = _SECONDS.get(s[13:15])
        if hhmm is None or second is None or s[6] != 32 or s[12] != 58:
            return None
        fraction = _tail(s, 15, False, 0)
        if fraction is None:
            return None
        this_year, last_year = days
        clock = hhmm + second + fraction  # local time of day
        # _NO_DATE (-inf) never exceeds the limit, so an impossible this-year date must be caught apart.
        if this_year != _NO_DATE and this_year + clock <= self._latest:
            return this_year + clock - self._tz
        return None if last_year == _NO_DATE else last_year + clock - self._tz

    def _bsd_date(self, key: bytes) -> tuple[float, float]:
        """Local midnights of b"Nov 24" in the reference's year and the one before (or _NO_DATE)."""
        month = _MONTHS.get(key[:3])
        day = _BSD_DAYS.get(key[4:6])
        if month is None or day is None or key[3] != 32:
            return _NO_DATE, _NO_DATE
        return _midnight(self._year, month, day), _midnight(self._year - 1, month, day)

    def _clf(self, s: bytes) -> float | None:
        """nginx/Apache "[24/Nov/2026:02:31:12 +0000]", the first "[" within BRACKET_SPAN bytes."""
        open_at = s.find(b"[", 0, BRACKET_SPAN)
        if open_at < 0:
            return None
        b = s[open_at + 1 : open_at + 28]
        if len(b) < 27 or b[26] != 93:  # "]"
            return None
        day = _cached(self._clf_dates, b[:11], _clf_date)
        hhmm = _HHMM.get(b[12:17])
        second = _SECONDS.get(b[18:20])
        hours = _HOURS.get(b[22:24])
        minutes = _MINUTES.get(b[24:26])
        if day == _NO_DATE or hhmm is None or second is None or hours is None or minutes is None:
            return None
        if b[11] != 58 or b[17] != 58 or b[20] != 32 or not (b[21] == 43 or b[21] == 45):
            return None
        offset = hours * 3600 + minutes * 60
        return day + hhmm + second - (offset if b[21] == 43 else -offset)
