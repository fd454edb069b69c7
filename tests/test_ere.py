"""The ERE validator: accepted and refused tables, limits, and a differential
check against GNU grep, the engine that actually runs the patterns.

The property checked against grep is one-sided on purpose: Bastion may refuse
more than grep does (ambiguous or surprising syntax), but it must never accept
a pattern that grep refuses or warns about.
"""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from broker.tools.query_logs.ere import (
    MAX_NESTING,
    MAX_PATTERN_BYTES,
    MAX_REPEAT,
    Alternation,
    Anchor,
    AnyChar,
    Bracket,
    Concat,
    Escape,
    Group,
    Literal,
    PatternError,
    Repeat,
    parse_ere,
)

GREP = shutil.which("grep", path="/usr/bin:/bin") or "grep"

ACCEPTED = [
    "Failed password",
    "^Nov 24",
    "ssh2$",
    "(Failed|Accepted) password for (invalid user )?[a-z]+",
    r"from ([0-9]{1,3}\.){3}[0-9]{1,3}",
    r"\bport\b",
    r"\w+@\w+",
    r"\s\S",
    r"\B",
    "[]a]",
    "[^]a]",
    "[a-]",
    "[-a]",
    "[a-c-]",
    "[[:alpha:][:digit:]_]",
    "[[:alpha:]-]",  # a '-' last is literal, after a class too
    "[-[:alpha:]]",
    "[^[:space:]]+",
    r"[\]",  # a backslash is literal inside brackets
    "a{2}",
    "a{2,}",
    "a{0,255}",
    "()",
    "a|",
    "(|a)",
    "a}",
    "a]",
    r"\.\*\+\?\{\}\(\)\[\]\|\^\$\\",
    "(é)*",
    "é",
    "-f/etc/shadow",
    "--help",
    "-e",
    "tab\there",
    "x" * MAX_PATTERN_BYTES,
    "(" * MAX_NESTING + "a" + ")" * MAX_NESTING,
]

REFUSED = [
    ("", "non-empty"),
    ("(", "unmatched '('"),
    ("a)", "unmatched ')'"),
    (")", "unmatched ')'"),
    ("[a", "unmatched '['"),
    ("[]", "unmatched '['"),
    ("a\\", "trailing backslash"),
    (r"(a)\1", "backreferences"),
    (r"\9", "backreferences"),
    (r"\d+", "[0-9]"),
    (r"\D", "[^0-9]"),
    (r"\<word", r"\b"),
    (r"word\>", r"\b"),
    (r"\`", r"\b"),
    (r"\'", r"\b"),
    (r"\t", "tab"),
    (r"\n", "newline"),
    (r"\/", "without the backslash"),
    (r"\-", "without the backslash"),
    ("a{", r"\{"),
    ("a{x}", r"\{"),
    ("a{1", r"\{"),
    ("a{,3}", "{0,n}"),
    ("a{3,2}", "reversed"),
    (f"a{{{MAX_REPEAT + 1}}}", "limited"),
    ("*a", "nothing to repeat"),
    ("+a", "nothing to repeat"),
    ("?", "nothing to repeat"),
    ("{2}", "nothing to repeat"),
    ("(*a)", "nothing to repeat"),
    ("a|*b", "nothing to repeat"),
    ("a**", "cannot follow another repetition"),
    ("a+?", "cannot follow another repetition"),
    ("a{1}{2}", "cannot follow another repetition"),
    ("^*", "anchor"),
    ("a$+", "anchor"),
    (r"\b*", "anchor"),
    ("é+", "non-ASCII"),
    ("[é]", "non-ASCII"),
    ("[z-a]", "reversed"),
    ("[a-c-e]", "ambiguous '-'"),
    ("[a-[:digit:]]", "range cannot end"),
    ("[[:alpha:]-z]", "ambiguous '-' after a character class"),
    ("[[:alpha:]--/]", "ambiguous '-' after a character class"),
    ("[^[:digit:]-[:alpha:]]", "ambiguous '-' after a character class"),
    ("[[:word:]]", "unknown character class"),
    ("[[:alpha]]", "unterminated character class"),
    ("[:alpha:]", "[[:name:]]"),
    ("[[=a=]]", "equivalence"),
    ("[[.a.]]", "collating"),
    ("line\nbreak", "line break"),
    ("carriage\rreturn", "line break"),
    ("nul\x00", "control character"),
    ("esc\x1b[31m", "control character"),
    ("del\x7f", "control character"),
    ("c1\x85", "control character"),
    ("lone \ud800 surrogate", "not valid Unicode"),
    ("x" * (MAX_PATTERN_BYTES + 1), "longer than"),
    ("é" * (MAX_PATTERN_BYTES // 2 + 1), "longer than"),  # the limit is in bytes, not characters
    ("(" * (MAX_NESTING + 1) + "a" + ")" * (MAX_NESTING + 1), "nested deeper"),
    ("((a{255}){255})", "too complex"),
    ("(a{101}){100}", "too complex"),
]


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_accepted(pattern: str) -> None:
    parse_ere(pattern)


@pytest.mark.parametrize(("pattern", "reason"), REFUSED)
def test_refused_with_a_reason(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError) as raised:
        parse_ere(pattern)
    assert reason in str(raised.value)


def test_non_string_is_refused() -> None:
    with pytest.raises(PatternError):
        parse_ere(b"bytes")  # type: ignore[arg-type]


def test_error_messages_stay_short_and_do_not_echo_huge_input() -> None:
    for pattern in ["[[:" + "x" * 900 + ":]]", "a{" + "9" * 900 + "}"]:
        with pytest.raises(PatternError) as raised:
            parse_ere(pattern)
        assert len(str(raised.value)) < 300


def test_ast_shape() -> None:
    node = parse_ere(r"^(Failed|Accepted) [[:alpha:]_a-c]{2,}\w.$")
    assert node == Concat(
        (
            Anchor("^"),
            Group(
                Alternation(
                    (Concat(tuple(Literal(c) for c in "Failed")), Concat(tuple(Literal(c) for c in "Accepted")))
                )
            ),
            Literal(" "),
            Repeat(Bracket(False, ("_",), (("a", "c"),), ("alpha",)), 2, None),
            Escape("w"),
            AnyChar(),
            Anchor("$"),
        )
    )
    assert parse_ere("[^]x-]") == Bracket(True, ("]", "x", "-"), (), ())
    assert parse_ere("a?") == Repeat(Literal("a"), 0, 1)
    assert parse_ere("a{3}") == Repeat(Literal("a"), 3, 3)


# --- differential check against the engine that runs the patterns ---------------


def grep_verdict(pattern: str) -> tuple[bool, str]:
    """(accepted silently, stderr) for `grep -E` in the C locale the workers use."""
    proc = subprocess.run(
        [GREP, "-E", "-a", "-c", "-e", pattern],
        input=b"sample line\n",
        capture_output=True,
        env={"LC_ALL": "C"},
        timeout=10,
    )
    return proc.returncode in (0, 1) and not proc.stderr, proc.stderr.decode(errors="replace")


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_grep_accepts_everything_we_accept(pattern: str) -> None:
    ok, stderr = grep_verdict(pattern)
    assert ok, stderr


GREP_REFUSES = ["(", "[a", "a\\", r"\9", "[z-a]", "[a-c-e]", "[[:word:]]", "[:alpha:]", "[[:alpha]]", "[[:alpha:]-z]"]


@pytest.mark.parametrize("pattern", GREP_REFUSES)
def test_what_grep_refuses_we_refuse_first(pattern: str) -> None:
    ok, _ = grep_verdict(pattern)
    assert not ok
    with pytest.raises(PatternError):
        parse_ere(pattern)


ALPHABET = [
    "a",
    "b",
    ".",
    "*",
    "+",
    "?",
    "|",
    "(",
    ")",
    "[",
    "]",
    "^",
    "$",
    "-",
    "{",
    "}",
    ",",
    "1",
    "2",
    ":",
    "\\",
    "\\w",
    "\\b",
    "\\.",
    "[:alpha:]",
    "[:digit:]",
    "{2}",
    "{1,3}",
    "é",
    " ",
]


def test_random_patterns_never_accepted_when_grep_refuses() -> None:
    """400 seeded random patterns: whatever we accept, grep accepts without a warning."""
    rng = random.Random(20261127)
    accepted = 0
    for _ in range(400):
        pattern = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 10)))
        try:
            parse_ere(pattern)
        except PatternError:
            continue
        accepted += 1
        ok, stderr = grep_verdict(pattern)
        assert ok, (pattern, stderr)
    assert accepted > 40  # the generator must exercise the accepting side too


@pytest.mark.parametrize(
    ("pattern", "anchor"), [("a*(^b)", "^"), ("x?(^b)", "^"), ("x^", "^"), ("(a$)b*", "$"), ("$x", "$")]
)
def test_an_anchor_inside_a_branch_is_refused_for_the_true_reason(pattern: str, anchor: str) -> None:
    """Such an anchor can match (grep finds 'b' with a*(^b)); the refusal must not say it never does."""
    with pytest.raises(PatternError) as raised:
        parse_ere(pattern)
    message = str(raised.value)
    assert "never" not in message and "match empty text" in message and f"for a literal write \\{anchor}" in message
    assert len(message) < 300


def test_an_anchor_after_what_can_match_empty_does_match_in_grep() -> None:
    found = subprocess.run(
        [GREP, "-E", "-c", "-e", "a*(^b)"], input=b"b\nab\n", capture_output=True, env={"LC_ALL": "C"}, timeout=10
    )
    assert found.stdout == b"1\n"
