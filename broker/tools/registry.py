"""Every tool a client may call, one row each, as OpenSSH's monitor has one row per
request (its mon_dispatch table): tools/list and tools/call both read this table, so a
tool cannot be listed and not callable, or callable and not listed.

A row's parse validates the arguments before anything is opened or started; its run is
the whole call, in its own package, with what the envelope hands it (broker/tools/context.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import mcp_types as types

from broker.policy import Policy
from broker.tools import list_logs
from broker.tools.check_ip_reputation import lookup
from broker.tools.check_ip_reputation import tool as check_ip_reputation
from broker.tools.context import CallContext
from broker.tools.query_journal import search as journal_search
from broker.tools.query_journal import tool as query_journal
from broker.tools.query_logs import search
from broker.tools.query_logs import tool as query_logs

A = TypeVar("A")


@dataclass(frozen=True)
class Tool(Generic[A]):
    name: str
    offered: Callable[[Policy], bool]  # whether this policy offers the tool at all
    schema: Callable[[Policy], types.Tool]  # what tools/list shows
    parse: Callable[[object, Policy], A]  # the arguments, validated (ToolError otherwise)
    run: Callable[[A, CallContext], Awaitable[types.CallToolResult]]


TOOLS: tuple[Tool[Any], ...] = (
    Tool(
        name=list_logs.NAME,
        offered=lambda policy: True,
        schema=lambda policy: list_logs.tool(),
        parse=list_logs.parse,
        run=list_logs.run,
    ),
    Tool(
        name=query_logs.NAME,
        offered=lambda policy: True,
        schema=lambda policy: query_logs.tool(policy.limits, policy.logs),
        parse=lambda arguments, policy: query_logs.parse(arguments, policy.limits),
        run=search.run,
    ),
    Tool(
        name=query_journal.NAME,
        offered=lambda policy: bool(policy.journals),  # only with [[journals]]
        schema=lambda policy: query_journal.tool(policy.limits, policy.journals),
        parse=lambda arguments, policy: query_journal.parse(arguments, policy.limits),
        run=journal_search.run,
    ),
    Tool(
        name=check_ip_reputation.NAME,
        offered=lambda policy: policy.intel is not None,  # only with [intel]
        schema=lambda policy: check_ip_reputation.tool(),
        parse=lookup.parse,
        run=lookup.run,
    ),
)


def offered(policy: Policy) -> dict[str, Tool[Any]]:
    """The rows this policy offers, by name, in the table's order."""
    return {row.name: row for row in TOOLS if row.offered(policy)}
