"""Everything derived from one policy, as one object a call captures once at its start.

`bastion serve` starts with one generation; a reload (SIGHUP, broker/cli/reload.py)
builds the next one completely, then swaps a single reference (Bastion.swap). A call
in flight keeps the generation it started with: its policy, its pinned allowlist,
its tools. The old allowlist's directory descriptors are closed only once the last
call using it has finished. Anything computed from the policy belongs here, never
cached elsewhere, or a reload would leave it stale.

Which policy changes cannot be applied live is restart_needed()'s to say.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from broker.files.allowlist import Allowlist
from broker.policy import Policy, RateLimit
from broker.ratelimit import Rate, RateLimiter
from broker.tools import registry

# Sections a reload may change, with the exceptions below. Every other one is fixed at start
# (today: [audit], the log and its checkpoint key; [sandbox]; [workers], the pool), and so is
# any section added later until it is listed here: unknown means restart, fail closed.
LIVE_SECTIONS = ("logs", "limits", "search", "rate_limit", "intel", "http", "scopes", "stdio")
# Set by load_policy: a different file is the point of a reload; the state directory comes
# from the command line, and what is written under it ([audit]) is fixed anyway.
NOT_READ = ("source", "sha256", "state_root")
FIXED_LIMITS = ("max_workers",)  # the pool's slots
# Of [http], only the clients (tokens) are read per request; the rest is baked into the
# transport when it starts (and so is any key added later until it is listed here).
LIVE_HTTP = ("clients",)


def rate_limiter(rules: RateLimit) -> RateLimiter:
    return RateLimiter(
        per_client=Rate(rules.calls, rules.window_s),
        global_rate=Rate(rules.global_calls, rules.global_window_s),
        per_tool={tool: Rate(rule.calls, rule.window_s) for tool, rule in rules.tools.items()},
    )


class PolicyGeneration:
    """One policy and what is derived from it: allowlist, rate limiter, offered tools, tokens."""

    def __init__(self, policy: Policy, allowlist: Allowlist, limiter: RateLimiter | None = None) -> None:
        self.policy = policy
        self.allowlist = allowlist
        self.limiter = limiter if limiter is not None else rate_limiter(policy.rate_limit)
        self.tools: dict[str, registry.Tool[Any]] = registry.offered(policy)
        # (name, token digest) of every HTTP client whose token this policy accepts.
        self.authorized = frozenset((c.name, c.token_sha256) for c in policy.http.clients if not c.revoked)
        self._names = frozenset(name for name, _ in self.authorized)
        self._users = 0  # calls that captured this generation and have not finished
        self._retired = False

    @classmethod
    def succeeding(cls, old: PolicyGeneration, policy: Policy, allowlist: Allowlist) -> PolicyGeneration:
        """The next generation. Unchanged rate limits keep their buckets: a reload must not
        hand every client a full bucket again."""
        same = old.policy.rate_limit == policy.rate_limit
        return cls(policy, allowlist, old.limiter if same else None)

    def client_names(self) -> frozenset[str]:
        return self._names

    @contextmanager
    def in_use(self) -> Iterator[PolicyGeneration]:
        """Held by a call from start to end, so its allowlist stays open meanwhile."""
        self._users += 1
        try:
            yield self
        finally:
            self._users -= 1
            self._close_if_done()

    def retire(self) -> None:
        """Replaced: close the allowlist once no call uses it any more (at once if none does)."""
        self._retired = True
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self._retired and self._users == 0:
            self.allowlist.close()

    @property
    def closed(self) -> bool:
        return self._retired and self._users == 0


def restart_needed(old: Policy, new: Policy) -> list[str]:
    """The keys `new` changes that only a restart can apply (empty: all of it is live)."""
    keys = [
        key
        for section in old.__struct_fields__
        if section not in LIVE_SECTIONS + NOT_READ
        for key in _changed(section, getattr(old, section), getattr(new, section))
    ]
    keys += [f"limits.{name}" for name in FIXED_LIMITS if getattr(old.limits, name) != getattr(new.limits, name)]
    keys += [key for key in _changed("http", old.http, new.http) if key.removeprefix("http.") not in LIVE_HTTP]
    if (old.intel is None) != (new.intel is None):
        keys.append("intel")  # adding or removing [intel] changes which kinds of worker the pool runs
    return keys


def _changed(section: str, old: object, new: object) -> list[str]:
    """The keys of `section` that differ (the section itself, if it is not a table)."""
    if isinstance(old, msgspec.Struct) and isinstance(new, msgspec.Struct):
        return [f"{section}.{name}" for name in old.__struct_fields__ if getattr(old, name) != getattr(new, name)]
    return [section] if old != new else []
