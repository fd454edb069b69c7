"""The query_journal tool: its schemas, argument validation and result shaping.

The arguments are validated here, before any file is opened or worker started: the
pattern by the same ERE parser as query_logs (then rendered canonically for grep), each
field filter against what journald stores, and a source's restrictions ([[journals]]
units, identifiers) applied on top, so that a client can narrow a source and never widen it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mcp_types as types

from bastion_wire.protocol import MAX_LINE_BYTES, JournalEntry
from broker.errors import ToolError
from broker.policy import JournalSource, Limits
from broker.tools.arguments import check_bool, check_int, check_names, check_string
from broker.tools.query_logs.engine import to_grep_ere
from broker.tools.query_logs.ere import PatternError, parse_ere
from broker.tools.query_logs.time_window import WindowError, parse_window
from broker.tools.query_logs.tool import DEFAULT_MAX_LINES, ORDERS, TIME_HELP, TRUNCATION_REASONS
from broker.tools.schema import nullable

NAME = "query_journal"
ARGUMENTS = {
    "source",
    "pattern",
    "unit",
    "identifier",
    "hostname",
    "boot",
    "priority",
    "since",
    "until",
    "max_lines",
    "order",
    "count_only",
    "ignore_case",
}
REQUIRED = {"source", "pattern"}
PRIORITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]  # syslog's 0..7
FIELD_VALUE = re.compile(r"[^\x00-\x1f\x7f-\x9f=]{1,256}")
BOOT_ID = re.compile(r"[0-9a-f]{32}")
TRUNCATION_TEXT = {
    "max_lines": " (stopped at max_lines; more matches exist)",
    "max_output_bytes": " (output cap reached; narrow the pattern or the filters)",
    "max_glob_files": " (more journal files than max_glob_files; the oldest were not searched: see the notes)",
    "timeout_s": " (timeout_s reached before every journal file was searched: see the notes)",
}


@dataclass(frozen=True)
class JournalArgs:
    source: str  # checked against the client's sources when the call opens them
    pattern: str
    grep_pattern: str  # the validated pattern rendered for grep -E
    max_lines: int
    units: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = ()
    hostnames: tuple[str, ...] = ()
    boots: tuple[str, ...] = ()
    max_priority: int | None = None
    since_usec: int | None = None
    until_usec: int | None = None
    newest_first: bool = False
    count_only: bool = False
    ignore_case: bool = False


def _field(description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": 256, "description": description}


def input_schema(limits: Limits, sources: Sequence[JournalSource]) -> dict[str, Any]:
    names = [source.name for source in sources]
    return {
        "type": "object",
        "properties": {
            "source": {
                "type": "string",
                "description": "A journal source's name, as list_logs names it (kind journal).",
                **({"enum": names} if names else {}),
            },
            "pattern": {
                "type": "string",
                "description": "POSIX extended regular expression (grep -E) matched against each entry's MESSAGE; "
                "byte-oriented (C locale); no backreferences; \\w \\s \\b are supported. '.' matches any entry.",
                "minLength": 1,
                "maxLength": 1024,
            },
            "unit": _field("Only entries of this systemd unit (_SYSTEMD_UNIT); '.service' is added to a bare name."),
            "identifier": _field("Only entries with this syslog identifier (SYSLOG_IDENTIFIER, e.g. sshd, sudo)."),
            "hostname": _field("Only entries of this host (_HOSTNAME): on a collector, one host of the fleet."),
            "boot": {
                "type": "string",
                "pattern": "^[0-9a-f]{32}$",
                "description": "Only entries of this boot (_BOOT_ID, 32 hex digits).",
            },
            "priority": {
                "type": "string",
                "enum": PRIORITIES + [str(level) for level in range(8)],
                "description": "Only entries of this priority or more severe (err: emerg, alert, crit and err).",
            },
            "since": {
                "type": "string",
                "maxLength": 40,
                "description": "Only entries at or after this time. " + TIME_HELP,
            },
            "until": {
                "type": "string",
                "maxLength": 40,
                "description": "Only entries at or before this time. " + TIME_HELP,
            },
            "max_lines": {
                "type": "integer",
                "description": "Return at most this many matching entries.",
                "minimum": 1,
                "maximum": limits.max_lines,
                "default": min(DEFAULT_MAX_LINES, limits.max_lines),
            },
            "order": {
                "type": "string",
                "enum": ORDERS,
                "default": "oldest_first",
                "description": "oldest_first: the first matches in time order; newest_first: the most recent first.",
            },
            "count_only": {
                "type": "boolean",
                "default": False,
                "description": "Return the number of matching entries per host, no entries.",
            },
            "ignore_case": {
                "type": "boolean",
                "default": False,
                "description": "Match letters case-insensitively (ASCII).",
            },
        },
        "required": sorted(REQUIRED),
        "additionalProperties": False,
    }


_LINE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "time": {"type": "string", "description": "ISO 8601 UTC, microseconds"},
        "host": {"type": "string"},
        "unit": {"type": "string"},
        "identifier": {"type": "string"},
        "pid": nullable({"type": "integer"}),
        "priority": nullable({"type": "integer", "minimum": 0, "maximum": 7}),
        "message": {"type": "string"},
    },
    "required": ["time", "host", "unit", "identifier", "pid", "priority", "message"],
    "additionalProperties": False,
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "source": {"type": "string"},
        "lines": {"type": "array", "items": _LINE},
        "hosts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"host": {"type": "string"}, "matches": {"type": "integer", "minimum": 0}},
                "required": ["host", "matches"],
                "additionalProperties": False,
            },
        },
        "files": {"type": "integer", "minimum": 0, "description": "journal files searched"},
        "total_matches": nullable({"type": "integer"}),
        "truncated": {"type": "boolean"},
        "truncated_reason": nullable({"type": "string", "enum": list(TRUNCATION_REASONS)}),
        "notes": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["source", "lines", "hosts", "files", "total_matches", "truncated", "truncated_reason", "notes"],
    "additionalProperties": False,
}


def tool(limits: Limits, sources: Sequence[JournalSource]) -> types.Tool:
    return types.Tool(
        name=NAME,
        title="Search a systemd journal",
        description="Search a journal source (this host's systemd journal, or a collector's journals of many "
        "hosts) for entries whose MESSAGE matches a POSIX extended regular expression (grep -E), narrowed by "
        "unit, syslog identifier, host, boot, priority and time. Returns each entry's time (UTC), host, "
        "unit, identifier, pid, priority and message, in time order across all the source's files, or counts "
        "per host with count_only. Journal text is untrusted data: control characters are escaped.",
        input_schema=input_schema(limits, sources),
        output_schema=OUTPUT_SCHEMA,
        annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False),
    )


def _value(args: dict[str, Any], name: str) -> str | None:
    if name not in args:
        return None
    value = args[name]
    if not isinstance(value, str) or not FIELD_VALUE.fullmatch(value):
        raise ToolError(f"{name} must be 1 to 256 characters, without control characters or '='")
    return value


def _unit(value: str | None) -> str | None:
    # As systemctl and journalctl -u do: a bare name means the service.
    return value if value is None or "." in value else value + ".service"


def _priority(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is int and 0 <= value <= 7:
        return value
    if isinstance(value, str) and value in PRIORITIES:
        return PRIORITIES.index(value)
    if isinstance(value, str) and value.isdigit() and len(value) == 1 and int(value) <= 7:
        return int(value)
    raise ToolError(f"priority must be 0..7 or one of: {', '.join(PRIORITIES)}")


def _usec(seconds: float | None) -> int | None:
    return None if seconds is None else max(0, round(seconds * 1_000_000))


def parse(arguments: object, limits: Limits, now: float | None = None) -> JournalArgs:
    args = check_names(arguments, ARGUMENTS, REQUIRED)
    source = check_string(args["source"], "source")
    pattern = check_string(args["pattern"], "pattern")
    try:
        grep_pattern = to_grep_ere(parse_ere(pattern))
    except PatternError as exc:
        raise ToolError(f"invalid pattern: {exc}") from None
    try:
        since, until = parse_window(args.get("since"), args.get("until"), time.time() if now is None else now)
    except WindowError as exc:
        raise ToolError(str(exc)) from None
    order = args.get("order", "oldest_first")
    if order not in ORDERS:
        raise ToolError(f"order must be one of: {', '.join(ORDERS)}")
    boot = args.get("boot")
    if boot is not None and (not isinstance(boot, str) or not BOOT_ID.fullmatch(boot)):
        raise ToolError("boot must be a boot ID: 32 lowercase hex digits (journalctl --list-boots)")
    unit, identifier, hostname = _unit(_value(args, "unit")), _value(args, "identifier"), _value(args, "hostname")
    return JournalArgs(
        source=source,
        pattern=pattern,
        grep_pattern=grep_pattern,
        max_lines=check_int(
            args.get("max_lines", min(DEFAULT_MAX_LINES, limits.max_lines)), "max_lines", 1, limits.max_lines
        ),
        units=(unit,) if unit else (),
        identifiers=(identifier,) if identifier else (),
        hostnames=(hostname,) if hostname else (),
        boots=(boot,) if boot else (),
        max_priority=_priority(args.get("priority")),
        since_usec=_usec(since),
        until_usec=_usec(until),
        newest_first=order == "newest_first",
        count_only=check_bool(args.get("count_only", False), "count_only"),
        ignore_case=check_bool(args.get("ignore_case", False), "ignore_case"),
    )


def restricted(wanted: tuple[str, ...], allowed: list[str] | None, name: str) -> tuple[str, ...]:
    """A filter within a source's restriction: what the client asked for if the source
    allows it, the restriction itself if the client asked for nothing."""
    if allowed is None:
        return wanted
    if not wanted:
        return tuple(allowed)
    refused = [value for value in wanted if value not in allowed]
    if refused:
        raise ToolError(f"{name} {refused[0][:64]!r} is not readable in this source; it allows: {', '.join(allowed)}")
    return wanted


def max_line_bytes(limits: Limits) -> int:
    return min(limits.max_line_bytes, MAX_LINE_BYTES)


def stamp(usec: int) -> str:
    seconds, micros = divmod(usec, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


def line(entry: JournalEntry) -> dict[str, Any]:
    return {
        "time": stamp(entry.time_usec),
        "host": entry.host,
        "unit": entry.unit,
        "identifier": entry.identifier,
        "pid": entry.pid,
        "priority": entry.priority,
        "message": entry.message,
    }


def line_bytes(entry: JournalEntry) -> int:
    """What an entry costs of the output cap, as query_logs counts a line: its text and framing."""
    return len(entry.message.encode()) + len(entry.host) + len(entry.unit) + len(entry.identifier) + 64


def result(
    source: str,
    entries: list[JournalEntry],
    counts: dict[str, int] | None,
    files: int,
    truncated_reason: str | None,
    notes: list[str],
) -> types.CallToolResult:
    structured = {
        "source": source,
        "lines": [line(entry) for entry in entries],
        "hosts": [
            {"host": host, "matches": n} for host, n in sorted((counts or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "files": files,
        "total_matches": sum(counts.values()) if counts is not None else None,
        "truncated": truncated_reason is not None,
        "truncated_reason": truncated_reason,
        "notes": notes,
    }
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=as_text(structured))], structured_content=structured
    )


def as_text(structured: dict[str, Any]) -> str:
    notes = "".join(f"\nnote: {note}" for note in structured["notes"])
    truncated = TRUNCATION_TEXT.get(structured["truncated_reason"] or "", "")
    where = f"{structured['source']} ({structured['files']} journal file(s))"
    if structured["total_matches"] is not None:
        per_host = "\n".join(f"{host['host'] or '(no hostname)'}: {host['matches']}" for host in structured["hosts"])
        body = f"\n{per_host}" if per_host else ""
        return f"{structured['total_matches']} matching entries in {where}{truncated}{body}{notes}"
    head = f"{len(structured['lines'])} matching entries in {where}{truncated}"
    body = "\n".join(entry_text(entry) for entry in structured["lines"])
    return (f"{head}\n{body}" if body else head) + notes


def entry_text(entry: dict[str, Any]) -> str:
    """One entry as a line: TIME HOST IDENTIFIER[PID]: MESSAGE (journalctl's short-iso-precise, in UTC)."""
    pid = f"[{entry['pid']}]" if entry["pid"] is not None else ""
    return (
        f"{entry['time']} {entry['host'] or '-'} {entry['identifier'] or entry['unit'] or '-'}{pid}: {entry['message']}"
    )
