"""Which engine runs a query_logs search, and the pattern it is given.

GNU grep -E (C locale) is always available. ripgrep, when the host has it
(the grep profile's optional executable), scans large logs 2-4x faster; the
broker renders the validated ERE for it (broker/ere.py to_rust_regex), and
tests/test_engines.py checks that both engines select the same lines. With
context lines the engines differ (ripgrep counts a match inside the trailing
context of the last -m match as a match), so such searches use grep.
"""

from __future__ import annotations

import os

from broker.ere import parse_ere, to_rust_regex
from broker.sandbox.plan import Plan
from workers.protocol import SearchRequest


def has_ripgrep(plan: Plan) -> bool:
    return any(os.path.basename(path) == "rg" for path in plan.executables)


def choose(request: SearchRequest, policy_engine: str, ripgrep: bool) -> SearchRequest:
    """The request as sent: with engine "rg" and its pattern when ripgrep may run it."""
    if policy_engine == "grep" or not ripgrep or request.context:
        return request
    request.engine, request.rg_pattern = "rg", to_rust_regex(parse_ere(request.pattern))
    return request
