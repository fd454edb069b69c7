"""Which engine runs a query_logs search, and the pattern it is given.

GNU grep -E (C locale) is always available. ripgrep, when the host has it
(the grep profile's optional executable), scans large logs 2-4x faster; the
broker renders the validated ERE for it (to_rust_regex below), and
tests/test_engines.py checks that both engines select the same lines. With
context lines the engines differ (ripgrep counts a match inside the trailing
context of the last -m match as a match), so such searches use grep.

ripgrep starts ~1.4 ms slower than grep (measured here: 2.6 vs 1.2 ms on a
1 MB log), and scans ~2.5x faster; under "auto" it takes searches over at
least RG_MIN_BYTES, where the scan outweighs the start.
"""

from __future__ import annotations

import os

from broker.ere import AnyChar, Anchor, Bracket, Concat, Escape, Group, Literal, Node, Repeat
from broker.sandbox.plan import Plan
from workers.protocol import SearchRequest


def has_ripgrep(plan: Plan) -> bool:
    return any(os.path.basename(path) == "rg" for path in plan.executables)


RG_MIN_BYTES = 8 << 20


def choose(request: SearchRequest, pattern: Node, policy_engine: str, ripgrep: bool, total_bytes: int) -> SearchRequest:
    """The request as sent: with engine "rg" and its pattern (`pattern` is request.pattern
    as broker/ere.py parsed it) when ripgrep should run it."""
    if policy_engine == "grep" or not ripgrep or request.context:
        return request
    if policy_engine == "auto" and total_bytes < RG_MIN_BYTES:
        return request
    request.engine, request.rg_pattern = "rg", to_rust_regex(pattern)
    return request


# --- the pattern for ripgrep (Rust regex syntax, bytes mode) ---------------------

# regex-syntax's meta characters: escaped wherever they stand for themselves.
RUST_META = frozenset("\\.+*?()|[]{}^$#&-~")


def to_rust_regex(node: Node) -> str:
    r"""Render a parsed pattern so that ripgrep matches exactly the lines GNU grep -E
    matches in the C locale. `(?-u)` makes the regex byte-oriented like grep there:
    `.` and negated brackets match any byte, \w \s \b and case folding are ASCII, and
    a non-ASCII literal is its UTF-8 bytes (the parser refuses the constructs where
    grep would treat those bytes separately: repeating one, or one in brackets)."""
    return "(?-u)" + _rust(node)


def _rust(node: Node) -> str:
    if isinstance(node, Literal):
        return _rust_char(node.char)
    if isinstance(node, AnyChar):
        return "."
    if isinstance(node, Anchor):
        return node.kind
    if isinstance(node, Escape):
        return "\\" + node.letter
    if isinstance(node, Bracket):
        items = [_rust_char(c) for c in node.chars]
        items += [f"{_rust_char(low)}-{_rust_char(high)}" for low, high in node.ranges]
        items += [f"[:{name}:]" for name in node.classes]
        return "[" + ("^" if node.negated else "") + "".join(items) + "]"
    if isinstance(node, Group):
        return "(?:" + _rust(node.body) + ")"
    if isinstance(node, Repeat):
        high = "" if node.high is None else str(node.high)
        count = {(0, ""): "*", (1, ""): "+", (0, "1"): "?"}.get((node.low, high))
        if count is None:
            count = f"{{{node.low}}}" if high == str(node.low) else f"{{{node.low},{high}}}"
        return _rust(node.body) + count
    if isinstance(node, Concat):
        return "".join(_rust(item) for item in node.items)
    return "|".join(_rust(branch) for branch in node.branches)


def _rust_char(char: str) -> str:
    if ord(char) > 0x7F:
        return "".join(f"\\x{byte:02X}" for byte in char.encode())
    return "\\" + char if char in RUST_META else char
