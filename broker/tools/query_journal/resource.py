"""A journal source as a resource, journal://NAME: its newest entries, oldest first, as
query_journal's text shows them, within resource_bytes. Read by journal workers like a
search of every entry (the pattern '^'), newest first, then cut to fit.
"""

from __future__ import annotations

import urllib.parse

import mcp_types as types

from broker.call_record import preview
from broker.errors import ToolError
from broker.files.journal_files import JournalFiles
from broker.policy import Policy
from broker.tools.context import CallContext
from broker.tools.query_journal import search
from broker.tools.query_journal import tool as query_journal

SCHEME = "journal"
BAD_URI = "uri must be a journal:// URI from resources/list"
NEWEST_ENTRIES = 1000  # entries a read asks for, at most limits.max_lines; resource_bytes cuts them further


def journal_uri(name: str) -> str:
    return f"{SCHEME}://" + urllib.parse.quote(name, safe="")


def listing(policy: Policy, journals: JournalFiles) -> list[types.Resource]:
    return [
        types.Resource(
            uri=journal_uri(name),
            name=name,
            title=f"journal {name}",
            description=(pinned.source.description or f"Journal source {name}")
            + f" (its newest entries, up to {policy.limits.resource_bytes} bytes)",
            mime_type="text/plain",
        )
        for name, pinned in journals.sources.items()
    ]


def source_of(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != SCHEME or parts.path or parts.query or parts.fragment or not parts.netloc:
        raise ToolError(BAD_URI)
    return urllib.parse.unquote(parts.netloc)


async def read(uri: str, ctx: CallContext) -> str:
    """The newest entries of a journal source as text. Raises ToolError for the client."""
    limits = ctx.policy.limits
    args = query_journal.parse(
        {
            "source": source_of(uri),
            "pattern": "^",
            "max_lines": min(NEWEST_ENTRIES, limits.max_lines),
            "order": "newest_first",
        },
        limits,
    )
    reply = await search.run(args, ctx)
    structured = reply.structured_content or {}
    lines = [query_journal.entry_text(line) for line in reversed(structured.get("lines", []))]
    kept, total = [], 0
    for line in reversed(lines):  # the newest that fit, shown oldest first
        total += len(line.encode()) + 1
        if total > limits.resource_bytes:
            break
        kept.append(line)
    text = "\n".join(reversed(kept)) + ("\n" if kept else "")
    ctx.record.result_preview = preview(text)
    return text
