"""The resources: every allowlisted log that exists, as a file:// URI, and its sanitized
tail (read by a "resource" worker, within resource_bytes); and every journal source, as a
journal:// URI (broker/tools/query_journal/resource.py).
"""

from __future__ import annotations

import os
import urllib.parse

import mcp_types as types

from bastion_wire.protocol import TailRequest
from broker.call_record import preview
from broker.errors import ToolError
from broker.files.allowlist import Allowlist
from broker.policy import Policy
from broker.pool.outcome import raise_for
from broker.tools.context import CallContext
from broker.tools.query_journal import resource as journal_resource

MAX_URI_CHARS = 8192
BAD_URI = "uri must be a file:// URI from resources/list"
# Any allowlisted file by its path (a rotation, a glob's member beyond the listing, ...):
# {+...} keeps the path's slashes, as log_uri does. Hosts complete log_path (completion/complete).
LOG_TEMPLATE = "file://{+log_path}"


def log_uri(path: str) -> str:
    return "file://" + urllib.parse.quote(path)


def uri_path(uri: str) -> object:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise ToolError(BAD_URI)
    try:
        return urllib.parse.unquote(parts.path, errors="strict")
    except UnicodeDecodeError:  # %ff, an overlong or surrogate sequence: no path could have that name
        raise ToolError(f"{BAD_URI}: its percent-escapes must encode UTF-8") from None


def listing(policy: Policy, allowlist: Allowlist) -> list[types.Resource]:
    return [
        types.Resource(
            uri=log_uri(entry.path),
            name=os.path.basename(entry.path),
            title=entry.path,
            description=entry.description
            or f"Allowlisted log {entry.path} (last {policy.limits.resource_bytes} bytes)",
            mime_type="text/plain",
        )
        for entry in allowlist.logs()
    ] + journal_resource.listing(policy, allowlist.journals)


def templates() -> list[types.ResourceTemplate]:
    return [
        types.ResourceTemplate(
            name="log",
            title="An allowlisted log file",
            uri_template=LOG_TEMPLATE,
            description="Any allowlisted log file (a rotation or one file of a glob too) by its absolute path: "
            "its sanitized tail. log_path completes from the allowlist.",
            mime_type="text/plain",
        )
    ]


async def read(uri: str, ctx: CallContext) -> str:
    """The sanitized tail of an allowlisted log. Raises ToolError for the client."""
    if not isinstance(uri, str) or len(uri) > MAX_URI_CHARS:
        raise ToolError(BAD_URI)
    if uri.startswith(journal_resource.SCHEME + "://"):
        return await journal_resource.read(uri, ctx)
    _, fd = ctx.allowlist.open(uri_path(uri), name="uri")
    limits = ctx.policy.limits
    try:
        result = await ctx.run(
            "resource", TailRequest(max_bytes=limits.resource_bytes, max_line_bytes=limits.max_line_bytes), [fd]
        )
    finally:
        os.close(fd)
    raise_for(result)
    text = "".join(result.text)
    ctx.record.reply = "ok"
    ctx.record.result_preview = preview(text)
    return text
