"""Which engine runs a query_logs search, and the pattern it is given.

GNU grep -E (C locale) is always available. ripgrep, when the host has it
(the grep profile's optional executable), scans large logs 2-4x faster; the
broker renders the validated ERE for it (broker/ere.py to_rust_regex), and
tests/test_engines.py checks that both engines select the same lines. With
context lines the engines differ (ripgrep counts a match inside the trailing
context of the last -m match as a match), so such searches use grep.

ripgrep starts ~1.4 ms slower than grep (measured here: 2.6 vs 1.2 ms on a
1 MB log), and scans ~2.5x faster; under "auto" it takes searches over at
least RG_MIN_BYTES, where the scan outweighs the start.
"""

from __future__ import annotations

import os

from broker.ere import parse_ere, to_rust_regex
from broker.sandbox.plan import Plan
from workers.protocol import SearchRequest


def has_ripgrep(plan: Plan) -> bool:
    return any(os.path.basename(path) == "rg" for path in plan.executables)


RG_MIN_BYTES = 8 << 20


def choose(request: SearchRequest, policy_engine: str, ripgrep: bool, total_bytes: int) -> SearchRequest:
    """The request as sent: with engine "rg" and its pattern when ripgrep should run it."""
    if policy_engine == "grep" or not ripgrep or request.context:
        return request
    if policy_engine == "auto" and total_bytes < RG_MIN_BYTES:
        return request
    request.engine, request.rg_pattern = "rg", to_rust_regex(parse_ere(request.pattern))
    return request
