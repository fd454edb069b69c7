"""The list_logs tool: every allowlisted log, for a model whose host never shows it resources.

Read-only and broker-side (no worker runs: no log byte is read). Each entry names what
query_logs accepts as log_path, its description and kind, and the files it covers now,
newest first, with sizes and modification times from fstat on descriptors opened exactly as
a search opens them (broker/files/allowlist.py): no name is ever stat()ed, so a planted
symlink cannot redirect the answer.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mcp_types as types

from broker.call_record import preview
from broker.errors import ToolError
from broker.files.allowlist import Allowlist, FileFacts
from broker.files.journal_files import JournalFiles, PinnedSource
from broker.files.pinned_entry import PinnedEntry
from broker.policy import Policy
from broker.tools.arguments import check_names
from broker.tools.context import CallContext

NAME = "list_logs"
MAX_FILTER_CHARS = 256
MAX_LOGS = 100  # entries per reply; a filter narrows a larger policy
FILES_SHOWN = 10  # files listed per entry (the newest); file_count says how many there are
KINDS = ["file", "rotations", "glob", "journal"]

_STAMP = {"type": "string", "description": "ISO 8601 UTC: the file's modification time"}
_NULLABLE_STAMP = {"anyOf": [_STAMP, {"type": "null"}]}
_FILE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "size_bytes": {"type": "integer", "minimum": 0},
        "modified": _STAMP,
        "compressed": {"type": "boolean"},
    },
    "required": ["path", "size_bytes", "modified", "compressed"],
    "additionalProperties": False,
}
_LOG: dict[str, Any] = {
    "type": "object",
    "properties": {
        "log_path": {
            "type": "string",
            "description": "what query_logs takes as log_path; of kind journal, what query_journal takes as source",
        },
        "description": {"type": "string"},
        "kind": {"type": "string", "enum": KINDS},
        "file_count": {"type": "integer", "minimum": 0},
        "newest_modified": _NULLABLE_STAMP,
        "files": {"type": "array", "items": _FILE},
    },
    "required": ["log_path", "description", "kind", "file_count", "newest_modified", "files"],
    "additionalProperties": False,
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "logs": {"type": "array", "items": _LOG},
        "total_logs": {"type": "integer", "minimum": 0},
        "truncated": {"type": "boolean"},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["logs", "total_logs", "truncated", "notes"],
    "additionalProperties": False,
}
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "filter": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_FILTER_CHARS,
            "description": "Only logs whose path, description or one of whose file names contains this text "
            "(case-insensitive).",
        }
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class ListArgs:
    filter: str | None = None  # casefolded


def tool() -> types.Tool:
    return types.Tool(
        name=NAME,
        title="List the allowlisted logs",
        description="List the logs query_logs may search: each log_path with its description, kind (a file, a "
        "file with its rotations, or a glob), how many files it covers now and the newest of them "
        f"(up to {FILES_SHOWN}) with size and modification time; and the journal sources query_journal may "
        "search (kind journal, log_path = the source's name, files = its journal files). Reads no log content.",
        input_schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False),
    )


def parse(arguments: object, policy: Policy) -> ListArgs:
    args = check_names(arguments, {"filter"}, set())
    if "filter" not in args:
        return ListArgs()
    value = args["filter"]
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_FILTER_CHARS:
        raise ToolError(f"filter must be a string of 1 to {MAX_FILTER_CHARS} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise ToolError("filter contains NUL or control characters")
    return ListArgs(value.casefold())


async def run(args: ListArgs, ctx: CallContext) -> types.CallToolResult:
    found = [(pinned, _names(ctx.allowlist, pinned, args.filter)) for pinned in _unique(ctx.allowlist)]
    entries = [functools.partial(_entry, ctx.allowlist, pinned, names) for pinned, names in found if names is not None]
    journals = ctx.allowlist.journals
    for source in journals.sources.values():
        names = _journal_names(journals, source, args.filter)
        if names is not None:
            entries.append(functools.partial(_journal_entry, journals, source, names))
    notes = []
    if len(entries) > MAX_LOGS:
        notes.append(f"{len(entries) - MAX_LOGS} more log(s) not listed: narrow them with filter")
    structured = {
        "logs": [entry() for entry in entries[:MAX_LOGS]],  # only those listed are opened for their facts
        "total_logs": len(entries),
        "truncated": len(entries) > MAX_LOGS,
        "notes": notes,
    }
    text = _as_text(structured)
    ctx.record.reply = "ok"
    ctx.record.result_preview = preview(text)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=structured)


def _unique(allowlist: Allowlist) -> list[PinnedEntry]:
    """One pinned entry per path the policy names (the first, as the allowlist matches)."""
    first: dict[str, PinnedEntry] = {}
    for pinned in allowlist.pinned:
        first.setdefault(pinned.entry.path, pinned)
    return list(first.values())


def _names(allowlist: Allowlist, pinned: PinnedEntry, wanted: str | None) -> list[str] | None:
    """The files an entry covers now (those a filter names, unless it names the entry
    itself); None when the filter leaves nothing of it."""
    entry = pinned.entry
    names = allowlist.covered(pinned)
    if wanted is None or wanted in entry.path.casefold() or wanted in entry.description.casefold():
        return names
    return [name for name in names if wanted in name.casefold()] or None


def _journal_names(journals: JournalFiles, source: PinnedSource, wanted: str | None) -> list[str] | None:
    """A journal source's files now, as _names does for a log."""
    names = journals.covered(source)
    about = (source.source.name.casefold(), source.source.description.casefold(), source.source.path.casefold())
    if wanted is None or any(wanted in text for text in about):
        return names
    return [name for name in names if wanted in name.casefold()] or None


def _journal_entry(journals: JournalFiles, source: PinnedSource, names: list[str]) -> dict[str, Any]:
    shown = []
    for name in names[:FILES_SHOWN]:
        st = journals.stat(source, name)
        if st is not None:
            shown.append(FileFacts(name, st.st_size, st.st_mtime, False))
    return _listed(source.source.name, source.source.description, "journal", len(names), shown)


def _kind(pinned: PinnedEntry) -> str:
    return "glob" if pinned.entry.is_glob else "rotations" if pinned.entry.rotations else "file"


def _entry(allowlist: Allowlist, pinned: PinnedEntry, names: list[str]) -> dict[str, Any]:
    shown = [facts for facts in (allowlist.facts(name) for name in names[:FILES_SHOWN]) if facts is not None]
    return _listed(pinned.entry.path, pinned.entry.description, _kind(pinned), len(names), shown)


def _listed(log_path: str, description: str, kind: str, count: int, shown: list[FileFacts]) -> dict[str, Any]:
    return {
        "log_path": log_path,
        "description": description,
        "kind": kind,
        "file_count": count,
        "newest_modified": _stamp(max(f.mtime for f in shown)) if shown else None,
        "files": [_file(facts) for facts in shown],
    }


def _file(facts: FileFacts) -> dict[str, Any]:
    return {
        "path": facts.path,
        "size_bytes": facts.size,
        "modified": _stamp(facts.mtime),
        "compressed": facts.compressed,
    }


def _stamp(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_text(structured: dict[str, Any]) -> str:
    lines = [
        f"{structured['total_logs']} allowlisted log(s); pass log_path to query_logs (kind journal: as source "
        "to query_journal):"
    ]
    for log in structured["logs"]:
        newest = f", newest {log['newest_modified']}" if log["newest_modified"] else ""
        about = f": {log['description']}" if log["description"] else ""
        lines.append(f"{log['log_path']} ({log['kind']}, {log['file_count']} file(s) now{newest}){about}")
        lines += [f"  {f['path']}  {f['size_bytes']} bytes  {f['modified']}" for f in log["files"]]
    lines += [f"note: {note}" for note in structured["notes"]]
    return "\n".join(lines)
