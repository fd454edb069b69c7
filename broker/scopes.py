"""Per-client least privilege: which logs, tools and prompts a client may use, and its limits.

A policy's [scopes.NAME] tables (broker/policy.py) are granted to HTTP clients
(`[[http.clients]] scope`) and to the stdio user (`[stdio] scope`); a client without one
may use everything, as before scopes existed. A scope is looked up from the current
Policy on every request and never cached, so a policy swapped in at run time takes effect
at the next request. Out of scope is shown as absent: a log outside the scope is refused
as a path the allowlist does not name (its view holds only the granted entries, so nothing
outside is ever opened, nor offered as a closest match), a tool or prompt as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from broker.files.allowlist import Allowlist
from broker.policy import JournalSource, LogEntry, Policy
from broker.ratelimit import Rate
from broker.tools.check_ip_reputation import tool as check_ip_reputation

INTEL_TOOL = check_ip_reputation.NAME
UNLISTED = "(unlisted)"  # the scope of a client name the policy does not list (fail closed)


@dataclass(frozen=True)
class Scope:
    name: str  # "" = no scope: everything
    logs: frozenset[str] | None = None  # [[logs]] paths granted; None: all
    journals: frozenset[str] | None = None  # [[journals]] names granted; None: all
    tools: frozenset[str] | None = None
    prompts: frozenset[str] | None = None
    max_lines: int | None = None  # tighter than limits.max_lines
    rate: Rate | None = None  # a bucket per client over all its calls, on top of [rate_limit]

    def allows_log(self, entry: LogEntry) -> bool:
        return self.logs is None or entry.path in self.logs

    def allows_journal(self, source: JournalSource) -> bool:
        return self.journals is None or source.name in self.journals

    def allows_tool(self, name: str) -> bool:
        return self.tools is None or name in self.tools

    def allows_prompt(self, name: str) -> bool:
        return self.prompts is None or name in self.prompts

    @property
    def has_logs(self) -> bool:
        return self.logs is None or bool(self.logs)

    def audit_fields(self) -> dict[str, Any]:
        """What the client's records add: the scope's name, when it has one."""
        return {"scope": self.name} if self.name else {}

    def policy(self, policy: Policy) -> Policy:
        """The policy as this client sees it: only its logs (schemas, listings), its max_lines
        (the schema's maximum, parsing) and no [intel] without check_ip_reputation (so the
        prompts do not send it to a tool it may not call)."""
        changes: dict[str, Any] = {}
        if self.logs is not None:
            changes["logs"] = [entry for entry in policy.logs if self.allows_log(entry)]
        if self.journals is not None:
            changes["journals"] = [source for source in policy.journals if self.allows_journal(source)]
        if self.max_lines is not None:
            changes["limits"] = msgspec.structs.replace(
                policy.limits, max_lines=min(self.max_lines, policy.limits.max_lines)
            )
        if policy.intel is not None and not self.allows_tool(INTEL_TOOL):
            changes["intel"] = None
        return msgspec.structs.replace(policy, **changes) if changes else policy

    def allowlist(self, allowlist: Allowlist) -> Allowlist:
        """What this client may open: a view of the pinned allowlist holding only its entries."""
        if self.logs is None and self.journals is None:
            return allowlist
        return allowlist.restricted(self.allows_log, self.allows_journal)


EVERYTHING = Scope("")
NOTHING = Scope(UNLISTED, frozenset(), frozenset(), frozenset(), frozenset())


def of(policy: Policy, client: str | None) -> Scope:
    """The scope of an HTTP client by name, or (None) of the stdio user."""
    if client is None:
        name = policy.stdio.scope
    else:
        listed = next((entry for entry in policy.http.clients if entry.name == client), None)
        if listed is None:  # not authenticated against this policy: nothing once scopes are in use
            return NOTHING if policy.scopes else EVERYTHING
        name = listed.scope
    if not name:
        return EVERYTHING
    rule = policy.scopes.get(name)
    if rule is None:  # parse_policy refuses this; fail closed all the same
        return NOTHING
    return Scope(
        name=name,
        logs=None if rule.logs is None else frozenset(rule.logs),
        journals=None if rule.journals is None else frozenset(rule.journals),
        tools=None if rule.tools is None else frozenset(rule.tools),
        prompts=None if rule.prompts is None else frozenset(rule.prompts),
        max_lines=rule.max_lines,
        rate=None if rule.rate is None else Rate(rule.rate.calls, rule.rate.window_s),
    )
