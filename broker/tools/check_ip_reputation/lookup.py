"""The check_ip_reputation call: open the compiled database (and the enrichment databases),
look the address up in an "intel" worker, and turn its report into the verdict.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Literal

import mcp_types as types

from bastion_wire.protocol import IntelRequest
from broker.call_record import preview
from broker.errors import ToolError
from broker.files.regular_file import open_regular
from broker.policy import Intel, Policy
from broker.pool.outcome import WORKER_FAILED, raise_for
from broker.tools.check_ip_reputation import tool as intel_tool
from broker.tools.check_ip_reputation.address import Network, parse_networks
from broker.tools.context import CallContext

log = logging.getLogger("bastion.service")
Enrichment = Literal["asn", "country"]


def parse(arguments: object, policy: Policy) -> intel_tool.IntelArgs:
    assert policy.intel is not None  # the tool is only offered when [intel] is configured
    return intel_tool.parse(arguments, _refused(tuple(policy.intel.refuse)))


@functools.lru_cache(maxsize=4)
def _refused(ranges: tuple[str, ...]) -> tuple[Network, ...]:
    """The policy's extra refused ranges: validated by load_policy, parsed once here."""
    return tuple(parse_networks(list(ranges), "intel.refuse"))


async def run(args: intel_tool.IntelArgs, ctx: CallContext) -> types.CallToolResult:
    intel = ctx.policy.intel
    assert intel is not None
    ctx.record.address = args.address.canonical
    fds, enrich, notes = _open_intel(intel)
    request = IntelRequest(
        packed=intel_tool.packed(args.address),
        include_history=args.include_history,
        max_matches=intel_tool.MAX_MATCHES,
        enrich=enrich,
    )
    try:
        result = await ctx.run("intel", request, fds)
    finally:
        for fd in fds:
            os.close(fd)
    if result.failure is not None and result.failure.code == "bad_database":
        raise ToolError(
            "the threat-intel database is damaged; an operator must recompile it (bastion intel compile)",
            "internal_error",
        )
    raise_for(result)
    if result.intel is None:
        raise ToolError(WORKER_FAILED, "worker_crashed")
    reply = intel_tool.result(args, result.intel, intel, notes)
    assert reply.structured_content is not None
    ctx.record.reply = "ok"
    ctx.record.verdict = reply.structured_content["verdict"]
    ctx.record.matches = len(reply.structured_content["matches"])
    ctx.record.result_preview = preview(
        reply.content[0].text if isinstance(reply.content[0], types.TextContent) else ""
    )
    return reply


def _open_intel(intel: Intel) -> tuple[list[int], list[Enrichment], list[str]]:
    """Descriptors for an intel worker: the compiled database, then the enrichment databases
    that exist. A missing database is the operator's to fix; the client gets a clean error.
    The compiled database is written by `bastion intel compile` itself (a rename, never a
    link), so a symlink there was planted: refused. The .mmdb files are the operator's."""
    try:
        fds = [open_regular(intel.database, follow_symlinks=False)]
    except OSError as exc:
        log.error("cannot open the intel database %s: %s", intel.database, exc.strerror)
        raise ToolError(
            "threat intelligence is not available: the feed database has not been compiled "
            "(an operator must run `bastion intel compile`)",
            "internal_error",
        ) from None
    enrich: list[Enrichment] = []
    notes: list[str] = []
    kinds: tuple[tuple[Enrichment, str], ...] = (("asn", intel.asn_mmdb), ("country", intel.country_mmdb))
    for kind, path in kinds:
        if not path:
            continue
        try:
            fds.append(open_regular(path))
            enrich.append(kind)
        except OSError as exc:
            log.warning("cannot open the %s database %s: %s", kind, path, exc.strerror)
            notes.append(f"{kind} enrichment unavailable (its database cannot be opened)")
    return fds, enrich, notes
