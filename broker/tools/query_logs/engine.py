"""Which engine runs a query_logs search, and the pattern it is given.

GNU grep -E (C locale) is always available. ripgrep, when the host has it
(the grep profile's optional executable), scans large logs 2-4x faster.
Neither engine ever parses the client's text: the broker renders the
validated tree for each (to_grep_ere, to_rust_regex below), so an engine's
own parsing quirks cannot split the answer by file size, and
tests/test_engines.py checks that both engines select the same lines. With
context lines the engines differ (ripgrep counts a match inside the trailing
context of the last -m match as a match), so such searches use grep.

ripgrep starts ~1.4 ms slower than grep (measured here: 2.6 vs 1.2 ms on a
1 MB log), and scans ~2.5x faster; under "auto" it takes each file of at
least RG_MIN_BYTES, where the scan outweighs the start, and grep the smaller
ones: the choice is per file, not by the total of a glob or a log's rotations.

An engine process costs ~3-4 ms per file in the sandbox, far more than a
small file's scan, so files under JOIN_MAX_BYTES (and every .gz, which the
worker decompresses through a pipe anyway) share one engine with their
neighbours of the same engine: the worker feeds them one after the other into
its stdin (workers/search.py, "joined" runs). A larger plain file is its
engine's stdin itself: feeding it through the worker would copy it twice more.
Searches with context lines, or a plain count (grep -c), keep an engine per
file: context would run across files, and a count is per stream.
"""

from __future__ import annotations

import os

from bastion_wire.plan import Plan
from bastion_wire.protocol import SearchRequest
from broker.tools.query_logs.ere import (
    Alternation,
    Anchor,
    AnyChar,
    Bracket,
    Concat,
    Escape,
    Group,
    Literal,
    Node,
    Repeat,
)


def has_ripgrep(plan: Plan) -> bool:
    return any(os.path.basename(path) == "rg" for path in plan.executables)


RG_MIN_BYTES = 8 << 20
# Below this, copying a plain file through the worker's pipe costs less than an engine's
# start (docs/PERFORMANCE.md, "Many files in one call").
JOIN_MAX_BYTES = 8 << 20


def choose(request: SearchRequest, pattern: Node, policy_engine: str, ripgrep: bool, sizes: list[int]) -> SearchRequest:
    """The request as sent: its grep pattern rendered from `pattern` (the client's
    pattern as broker/tools/query_logs/ere.py parsed it), each file's engine (`sizes`: the
    files' sizes on disk, in request.files order) and whether it joins the engine run of
    the file before it; ripgrep's own rendering when any file runs on it."""
    request.pattern = to_grep_ere(pattern)
    rg_allowed = ripgrep and policy_engine != "grep" and not request.context
    for spec, size in zip(request.files, sizes, strict=True):
        spec.engine = "rg" if rg_allowed and (policy_engine == "rg" or size >= RG_MIN_BYTES) else "grep"
    used = engines(request)
    request.engine = "rg" if used == "rg" else "grep"
    request.rg_pattern = to_rust_regex(pattern) if "rg" in used else ""
    _join(request, sizes)
    return request


def engines(request: SearchRequest) -> str:
    """The engines the request runs, as the audit names them: "grep", "rg" or "grep+rg"."""
    used = {spec.engine or request.engine for spec in request.files} or {request.engine}
    return "+".join(sorted(used))


def _join(request: SearchRequest, sizes: list[int]) -> None:
    """Mark each file that shares the engine process of the file before it."""
    if request.context or (request.count_only and request.since is None and request.until is None):
        return
    small = [spec.gzip or size < JOIN_MAX_BYTES for spec, size in zip(request.files, sizes, strict=True)]
    for index in range(1, len(request.files)):
        spec, before = request.files[index], request.files[index - 1]
        spec.join = small[index] and small[index - 1] and spec.engine == before.engine


# --- the pattern for GNU grep -E (C locale) ------------------------------------

# ERE's special characters outside brackets: escaped wherever they stand for themselves.
GREP_META = frozenset(".[]()*+?{}|^$\\")
# Inside brackets these are literal only in certain places (or, '\\', only in
# some engines): rendered singly, where they are literal, never ending a range.
BRACKET_SPECIAL = "[\\]^-"
# Ranges never cross these boundaries. With -i, GNU grep case-folds a range's
# ends before checking their order, so [_-z] (folded: _-Z) is an "Invalid range
# end"; a range inside A-Z or a-z, or holding no letter at all, folds safely.
RANGE_SPANS = ((0x00, 0x40), (0x41, 0x5A), (0x5B, 0x60), (0x61, 0x7A), (0x7B, 0x7F))


def to_grep_ere(node: Node) -> str:
    """Render a parsed pattern canonically for `grep -E` in the C locale, with or
    without -i: the same language, written so that grep's quirks cannot apply
    (brackets are rebuilt from the set of characters they match)."""
    if isinstance(node, Literal):
        return "\\" + node.char if node.char in GREP_META else node.char
    if isinstance(node, Bracket):
        return _grep_bracket(node)
    if isinstance(node, Group):
        return "(" + to_grep_ere(node.body) + ")"
    if isinstance(node, Repeat):
        return to_grep_ere(node.body) + _count(node)
    if isinstance(node, Concat):
        return "".join(to_grep_ere(item) for item in node.items)
    if isinstance(node, Alternation):
        return "|".join(to_grep_ere(branch) for branch in node.branches)
    if isinstance(node, AnyChar):
        return "."
    if isinstance(node, Anchor):
        return node.kind
    assert isinstance(node, Escape)
    return "\\" + node.letter


def _grep_bracket(node: Bracket) -> str:
    members = bytearray(128)  # the bracket's set (ASCII only: the parser refuses more)
    for char in node.chars:
        members[ord(char)] = 1
    for low, high in node.ranges:
        members[ord(low) : ord(high) + 1] = b"\1" * (ord(high) - ord(low) + 1)
    # ']' first (anywhere else it would close), '[' after the ranges (so that
    # no ':', '.' or '=' follows it), '^' not first (it would negate), '-' last.
    head = ["]"] if members[ord("]")] else []
    tail = [char for char in "[\\^-" if members[ord(char)]]
    for char in BRACKET_SPECIAL:
        members[ord(char)] = 0
    head += [f"[:{name}:]" for name in node.classes]
    head += _grep_runs(members)
    if not head and tail[:1] == ["^"] and not node.negated:
        if tail == ["^"]:
            return "\\^"
        tail = ["-", "^"]  # a leading '-' is literal
    return "[" + ("^" if node.negated else "") + "".join(head + tail) + "]"


def _grep_runs(members: bytearray) -> list[str]:
    """The members as ranges, none crossing a RANGE_SPANS boundary (bounded: one pass)."""
    runs = []
    for low, high in RANGE_SPANS:
        start = members.find(1, low, high + 1)
        while start != -1:
            end = members.find(0, start, high + 1)
            end = high + 1 if end == -1 else end
            runs.append(_grep_run(start, end - 1))
            start = members.find(1, end, high + 1)
    return runs


def _grep_run(low: int, high: int) -> str:
    if high - low >= 2:
        return f"{chr(low)}-{chr(high)}"
    return "".join(map(chr, range(low, high + 1)))


def _count(node: Repeat) -> str:
    high = "" if node.high is None else str(node.high)
    count = {(0, ""): "*", (1, ""): "+", (0, "1"): "?"}.get((node.low, high))
    if count is None:
        count = f"{{{node.low}}}" if high == str(node.low) else f"{{{node.low},{high}}}"
    return count


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
        return _rust(node.body) + _count(node)
    if isinstance(node, Concat):
        return "".join(_rust(item) for item in node.items)
    return "|".join(_rust(branch) for branch in node.branches)


def _rust_char(char: str) -> str:
    if ord(char) > 0x7F:
        return "".join(f"\\x{byte:02X}" for byte in char.encode())
    return "\\" + char if char in RUST_META else char
