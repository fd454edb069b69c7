"""The since/until arguments of query_logs: validated here, in the broker.

Each becomes an absolute UTC unix time before any worker starts, so workers
only ever compare numbers. Accepted (strings only, at most 40 characters):
  2026-11-24                      a date: 00:00 UTC that day
  2026-11-24T08:00[:00[.5]]       a date-time ("T", "t" or a space); no zone = UTC
  2026-11-24T08:00:00Z            ... or with "Z" or an offset +01:00 / +0100
  -30s -30m -2h -7d -2w           before `now` (minus sign required), 1 s to 10 years
  now
Refusals are WindowError, whose message names the argument, gives examples
and never echoes the value (it may hold anything).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

MAX_LENGTH = 40
MIN_YEAR, MAX_YEAR = 1970, 9999
MAX_RELATIVE_S = 3653 * 86400  # ten years, leap days included
_LATEST = datetime(MAX_YEAR, 12, 31, 23, 59, 59, 999999, tzinfo=UTC).timestamp()
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EXAMPLES = "e.g. 2026-11-24, 2026-11-24T08:00:00Z, 2026-11-24T08:00+01:00, -30m, -2h, -7d or now"

# [0-9], not \d: \d would also match non-ASCII digits.
_RELATIVE = re.compile(r"([+-]?)([0-9]{1,12})([A-Za-z]*)")
_ABSOLUTE = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[Tt ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<zone_hour>[0-9]{2}):?(?P<zone_minute>[0-9]{2}))?)?"
)


class WindowError(ValueError):
    """A since/until value that cannot be used; the message is safe for the client."""


def parse_time_argument(value: object, name: str, now: float) -> float:
    """Unix seconds (UTC) of one since/until value; `now` anchors relative ones."""
    if not isinstance(value, str):
        raise WindowError(f"{name} must be a string ({_EXAMPLES})")
    if len(value) > MAX_LENGTH:
        raise WindowError(f"{name} is too long (at most {MAX_LENGTH} characters; {_EXAMPLES})")
    if value == "now":
        return _in_range(now, name)
    relative = _RELATIVE.fullmatch(value)
    if relative is not None and (relative[1] or relative[3]):  # a bare number is no relative time
        return _in_range(now - _relative_seconds(relative, name), name)
    absolute = _ABSOLUTE.fullmatch(value)
    if absolute is not None:
        return _in_range(_absolute_seconds(absolute, name), name)
    raise WindowError(f"{name} must be an ISO 8601 date or date-time, a time relative to now, or now ({_EXAMPLES})")


def parse_window(since: object | None, until: object | None, now: float) -> tuple[float | None, float | None]:
    """Both bounds as unix seconds (None where not given); since must not be after until."""
    start = None if since is None else parse_time_argument(since, "since", now)
    end = None if until is None else parse_time_argument(until, "until", now)
    if start is not None and end is not None and start > end:
        raise WindowError("since is after until")
    return start, end


def _relative_seconds(match: re.Match[str], name: str) -> int:
    sign, amount, unit = match.groups()
    if sign != "-" or unit not in _UNITS:
        raise WindowError(
            f"{name}: a relative time is a minus sign, a number and one of the units s, m, h, d, w "
            "(e.g. -90s, -30m, -2h, -7d, -2w)"
        )
    seconds = int(amount) * _UNITS[unit]
    if not 1 <= seconds <= MAX_RELATIVE_S:
        raise WindowError(f"{name}: a relative time must be between 1 second and 10 years before now (e.g. -2h, -7d)")
    return seconds


def _absolute_seconds(match: re.Match[str], name: str) -> float:
    part = match.groupdict()
    year = int(part["year"])
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise WindowError(f"{name}: the year must be between {MIN_YEAR} and {MAX_YEAR}")
    try:
        moment = datetime(
            year,
            int(part["month"]),
            int(part["day"]),
            int(part["hour"] or 0),
            int(part["minute"] or 0),
            int(part["second"] or 0),
            tzinfo=_zone(part),
        )
    except ValueError:
        raise WindowError(f"{name} is not a valid date or time ({_EXAMPLES})") from None
    fraction = part["fraction"]
    return moment.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _zone(part: dict[str, str | None]) -> timezone:
    """The stamp's zone: UTC unless an offset is given (ValueError if it is out of range)."""
    if part["sign"] is None:
        return UTC
    hours, minutes = int(part["zone_hour"] or 0), int(part["zone_minute"] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError("zone offset out of range")
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(offset if part["sign"] == "+" else -offset)


def _in_range(seconds: float, name: str) -> float:
    # An offset can push a valid local date-time outside 1970..9999 in UTC.
    if not 0 <= seconds <= _LATEST:
        raise WindowError(f"{name} must fall between 1970-01-01T00:00:00Z and {MAX_YEAR}-12-31T23:59:59Z")
    return seconds
