"""GNU grep -E and ripgrep must select exactly the same lines for every accepted pattern.

query_logs validates a pattern once (broker/tools/query_logs/ere.py) and renders the tree for
whichever engine runs: `grep -E` in the C locale (to_grep_ere) or ripgrep
(to_rust_regex); neither engine parses the client's text. A line either
matches or not, so the engines agree when they select the same lines. Checked
here, with and without ignore_case, over a corpus with every printable ASCII
character on a line of its own, seeded random short lines, UTF-8, invalid
UTF-8 and tabs: for a curated list of patterns (every construct of the
accepted language and its corners) and for random patterns from a wide
generator over the same grammar. Where grep accepts the client's text as it
is, its answer must also be the rendering's: rendering changes the writing,
never the meaning.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import sandbox_profiles
from bastion_wire.protocol import SearchFile, SearchRequest
from broker.tools.query_logs import engine as search_engine
from broker.tools.query_logs.engine import to_grep_ere, to_rust_regex
from broker.tools.query_logs.ere import POSIX_CLASSES, PatternError, parse_ere
from tests.conftest import BASTION, SAMPLE_LOGS, bastion_client, read_audit, write_policy
from workers.search import RG_RAW_BYTES

RG = shutil.which("rg")
pytestmark = pytest.mark.skipif(RG is None, reason="ripgrep is not installed (the grep engine is used then)")

CORPUS: list[bytes] = [
    b"Oct  1 00:00:13 web-01 sshd[51844]: Failed password for jenkins from 141.55.83.134 port 56071 ssh2",
    b"Oct  1 00:00:14 web-01 sshd[76032]: Accepted publickey for alice from 10.0.0.7 port 22 ssh2",
    b"Oct  1 00:00:15 web-01 sudo:    bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/bin/cat /etc/shadow",
    b"Invalid user admin from 203.0.113.9 port 4242",
    b"",
    b"   ",
    b"\t\ttabbed\tline\t",
    b"caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e",
    b"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e log line",
    b"invalid utf-8 \xff\xfe here \xc3 alone",
    b"brackets [x] {y} (z) <w> a|b a+b a*b a?b a.b a^b a$b a\\b",
    b"punct #&-~ !\"%',/:;=@_`",
    b"UPPER lower MiXeD 0123456789 0xDEADbeef",
    b"foo.bar foobar foo-bar foo_bar foo bar",
    b"aaa ab abab ababab aabb x",
    b'GET /wp-login.php HTTP/1.1" 404 /.env',
    b"word_boundary-test word boundary_",
    b"end$",
    b"^start",
    b"a" * 300,
]
# Every printable ASCII character alone, so that any two bracket sets that differ
# select different lines; then short lines over the characters around the ASCII
# letters' edges, so that concatenations and repeats differ too.
CORPUS += [bytes([code]) for code in range(0x20, 0x7F)] + [b"\t"]
EDGE_CHARS = "@AZ[\\]^_`az{|}~-09:.= !/BYby\t#"
_corpus_rng = random.Random(20261202)
CORPUS += [
    "".join(_corpus_rng.choice(EDGE_CHARS) for _ in range(_corpus_rng.randint(2, 9))).encode() for _ in range(150)
]

PATTERNS = [
    "Failed password",
    "Accepted (password|publickey) for",
    "sudo: .*COMMAND=",
    "Invalid user [a-z]+ from",
    "^Oct",
    "ssh2$",
    "^$",
    "^ +$",
    "^[[:space:]]*$",
    "^",
    "$",
    "x",
    "a|b",
    "(a|)b",
    "a|",
    "()",
    "x()y",
    ".",
    "..",
    "^.$",
    "[.]",
    "\\.",
    "\\$",
    "\\^",
    "\\|",
    "\\(z\\)",
    "\\[x\\]",
    "\\{y\\}",
    "a\\+b",
    "a\\*b",
    "a\\?b",
    "a\\\\b",
    "[]]",
    "[]a]",
    "[^]]",
    "[a-]",
    "[-a]",
    "[^-]",
    "[a-c]+",
    "[^a-z ]",
    "[[:upper:]]+",
    "[[:lower:]]{3}",
    "[[:digit:]]{2,3}",
    "[[:alnum:]_]+",
    "[[:punct:]]",
    "[[:blank:]]",
    "[[:cntrl:]]",
    "[[:print:]]{80}",
    "[[:graph:]]",
    "[[:xdigit:]]{8}",
    "[^[:print:]]",
    "[^[:alpha:][:space:]]",
    "[#&~-]",
    "#",
    "&",
    "~",
    "-",
    "[&&]",
    "[~~]",
    "[--]",
    "[\\]",
    "[a\\]",
    "\\bfoo\\b",
    "\\Bbar",
    "foo\\B",
    "\\w+",
    "\\W",
    "\\s",
    "\\S+",
    "\\bword\\b",
    "^\\w",
    "\\w$",
    "a{3}",
    "a{2,}",
    "a{1,2}b",
    "(ab){2}",
    "(ab){2,3}",
    "(a|b){3}",
    "a{0}",
    "a{0}b",
    "a{0,1}x",
    "(a*)*",
    "(a+)+b",
    "caf\u00e9",
    "(\u00e9)+",
    "cr\u00e8me|br",
    "\u65e5\u672c",
    ".\u00a9",
    "utf-8 .",
    "here . alone",
    "[^a-z]here",
    "wp-login\\.php|/\\.env",
    "0x[[:xdigit:]]+",
    "MiXeD",
    "mixed",
    "UPPER|lower",
    "[A-Z]{5}",
    "a}",
    "a]",
    "[{}]",
    # Ranges across the letters' edges: grep -i folds their ends and refused these; split by the rendering.
    "[_-z]",
    "[Z-b]",
    "[`-h]",
    "[A-z]",
    "[Z-a]",
    "[X-a]",
    "[@-Z]",
    "[@-a]",
    "[ -~]",
    "[!-/]",
    "[^_-z]",
    "[^A-z]",
    "[0-Z]",
    "[\\-a]",
    "[[-a]",
    "[]-a]",
    "[[-`]",
    "[^[-`]",
    "[Y-_]",
    "[y-~]",
    "[a-a]",
    "[`-`]",
    "[%--]",
    "[--/]",
    "[+--]",
    # Specials that only their place in brackets makes literal.
    "[[]",
    "[^[]",
    "[]^]",
    "[^^]",
    "[-^]",
    "[^-^]",
    "[]^-]",
    "[][]",
    "[[:alpha:]-]",
    "[-[:alpha:]]",
    "[[:alpha:]z-]",
    "[:]",
    "[^:]",
    "[=]",
    "[.:=]",
    "[a[]",
    "[[a]",
    "[[-]",
    "[\\^]",
    "[]\\]",
    "[[\\^-]",
    "[]-^]",
    "[^]-^]",
    # Classes under ignore_case: upper and lower fold into letters, also negated.
    "[^[:upper:]]",
    "[^[:lower:]]",
    "[[:upper:][:digit:]]",
    "[^[:upper:]a]",
    "[^a]",
    "[^A]",
    "[^a-z]",
    "[^A-Z]+$",
    "\\w_",
    "\\W+",
    "[^\\w]",
    "a\\b",
    "\\ba",
    "\\B.\\B",
    "(^|x)a",
    "(a|$)",
    "^(\\w+)$",
]


def _run_grep(pattern: str, ignore_case: bool, corpus: Path) -> tuple[set[int] | None, bytes]:
    """(selected line numbers, or None when grep refused the pattern; stderr)."""
    argv = ["grep", "-E", "-a", "-n"] + (["-i"] if ignore_case else []) + ["-e", pattern, str(corpus)]
    done = subprocess.run(argv, capture_output=True, env={"LC_ALL": "C"}, timeout=30)
    if done.returncode not in (0, 1) or done.stderr:
        return None, done.stderr
    return {int(line.split(b":", 1)[0]) for line in done.stdout.splitlines()}, b""


def _grep(pattern: str, ignore_case: bool, corpus: Path) -> set[int]:
    lines, stderr = _run_grep(pattern, ignore_case, corpus)
    assert lines is not None, (pattern, ignore_case, stderr)  # an engine error, or a warning, is a failure
    return lines


def _rg(pattern: str, ignore_case: bool, corpus: Path) -> set[int]:
    assert RG is not None
    argv = [RG, "--no-config", "-j1", "-a", *RG_RAW_BYTES, "-n", "--no-heading", "--no-filename"] + (
        ["-i"] if ignore_case else []
    )
    done = subprocess.run(argv + ["-e", pattern, str(corpus)], capture_output=True, env={"HOME": "/"}, timeout=30)
    assert done.returncode in (0, 1) and not done.stderr, (pattern, done.stderr)
    return {int(line.split(b":", 1)[0]) for line in done.stdout.splitlines()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engines") / "corpus.log"
    path.write_bytes(b"\n".join(CORPUS) + b"\n")
    return path


def _same_lines(pattern: str, corpus: Path) -> int:
    """Assert both renderings select the same lines, with and without -i, and that
    grep on the client's own text (where it takes it) agrees; return how many
    times grep -i alone would have refused that text."""
    tree = parse_ere(pattern)
    for_grep, for_rg = to_grep_ere(tree), to_rust_regex(tree)
    refused = 0
    for ignore_case in (False, True):
        expected = _grep(for_grep, ignore_case, corpus)
        assert _rg(for_rg, ignore_case, corpus) == expected, (pattern, for_grep, for_rg, ignore_case)
        as_written, stderr = _run_grep(pattern, ignore_case, corpus)
        # Without -i the accepted language is a subset of grep's; with -i grep refuses some of its ranges.
        assert as_written is not None or ignore_case, (pattern, stderr)
        assert as_written is None or as_written == expected, (pattern, for_grep, ignore_case)
        refused += as_written is None
    return refused


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p != "([a-z]+) \\1x"])
def test_curated_patterns_select_the_same_lines(pattern: str, corpus: Path) -> None:
    _same_lines(pattern, corpus)


@pytest.mark.parametrize("pattern", ["[_-z]", "[Z-b]", "[`-h]", "[\\-a]", "[^X-a]", "(x|[]-b])+"])
def test_ranges_grep_refuses_under_ignore_case_run_rendered(pattern: str, corpus: Path) -> None:
    """The client's text is an 'Invalid range end' for grep -i; its rendering runs and agrees with ripgrep."""
    refused, stderr = _run_grep(pattern, True, corpus)
    assert refused is None and b"Invalid range end" in stderr
    assert _same_lines(pattern, corpus) == 1


@pytest.mark.parametrize(
    ("pattern", "rendered"),
    [
        ("Failed (password|publickey)", "Failed (password|publickey)"),
        ("[_-z]", "[_`a-z]"),
        ("[Z-b]", r"[]Z_`ab[\^]"),
        ("[ -~]", r"[] -,.-@A-Z_`a-z{-~[\^-]"),
        ("[[:alpha:]-]", "[[:alpha:]-]"),
        ("[^]a-]", "[^]a-]"),
        ("[-^]", "[-^]"),
        ("[^^]", "[^^]"),
        ("[.:=[]", "[.:=[]"),
        (r"\.\{a}\\", r"\.\{a\}\\"),
        ("(a|)b{2,}c{0,1}d?", "(a|)b{2,}c?d?"),
        (r"^\bx\W+\s\B.$", r"^\bx\W+\s\B.$"),
    ],
)
def test_grep_rendering_is_canonical(pattern: str, rendered: str) -> None:
    assert to_grep_ere(parse_ere(pattern)) == rendered


def test_backreferences_never_reach_an_engine() -> None:
    with pytest.raises(PatternError, match="backreferences"):
        parse_ere("([a-z]+) \\1x")


# --- random patterns from the accepted grammar (and some just outside it) -------------

LITERALS = [
    "a",
    "b",
    "z",
    "A",
    "Z",
    "_",
    "`",
    "@",
    "-",
    "]",
    "}",
    " ",
    "0",
    "#",
    "~",
    ":",
    "\u00e9",
    "\t",
    "\\.",
    "\\[",
    "\\]",
    "\\^",
    "\\$",
    "\\|",
    "\\(",
    "\\)",
    "\\{",
    "\\}",
    "\\*",
    "\\+",
    "\\?",
    "\\\\",
]
ZERO_OR_CLASS = [".", "\\w", "\\W", "\\s", "\\S", "\\b", "\\B", "^", "$"]
REPEATS = ["*", "+", "?", "{2}", "{1,3}", "{0,2}", "{2,}", "{0}"]
BRACKET_CHARS = "@AZ[\\]^_`az{|}~-09:.= !/BYby"
CLASS_NAMES = sorted(POSIX_CLASSES)


def _random_bracket(rng: random.Random) -> str:
    items = ["]"] if rng.random() < 0.15 else []
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.4:
            low, high = rng.choice(BRACKET_CHARS), rng.choice(BRACKET_CHARS)
            if rng.random() < 0.85:  # mostly in order; reversed ones must be refused
                low, high = min(low, high), max(low, high)
            items.append(f"{low}-{high}")
        elif kind < 0.7:
            items.append(rng.choice(BRACKET_CHARS))
        else:
            items.append(f"[:{rng.choice(CLASS_NAMES)}:]")
    if rng.random() < 0.15:
        items.append("-")
    return "[" + ("^" if rng.random() < 0.3 else "") + "".join(items) + "]"


def _random_pattern(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if depth < 2 and kind < 0.15:
            branches = (_random_pattern(rng, depth + 1) if rng.random() < 0.9 else "" for _ in range(rng.randint(1, 3)))
            atom = "(" + "|".join(branches) + ")"
        elif kind < 0.5:
            atom = _random_bracket(rng)
        elif kind < 0.8:
            atom = rng.choice(LITERALS)
        else:
            atom = rng.choice(ZERO_OR_CLASS)
        if rng.random() < 0.3:  # also on anchors, \b and é: the parser must refuse those
            atom += rng.choice(REPEATS)
        parts.append(atom)
    return "".join(parts)


def _check_random(seed: int, count: int, corpus: Path) -> tuple[int, int]:
    """(accepted patterns checked, times grep alone would have refused the client's text)."""
    rng = random.Random(seed)
    checked = refused = 0
    for _ in range(count):  # bounded; patterns the parser refuses are skipped
        pattern = _random_pattern(rng)
        try:
            parse_ere(pattern)
        except PatternError:
            continue
        refused += _same_lines(pattern, corpus)
        checked += 1
    return checked, refused


def test_random_patterns_select_the_same_lines(corpus: Path) -> None:
    checked, refused = _check_random(20261202, 250, corpus)
    assert checked > 150
    assert refused > 5  # the generator reaches the ranges grep -i refuses as written


@pytest.mark.slow
def test_many_random_patterns_select_the_same_lines(corpus: Path) -> None:
    checked, _ = _check_random(20261203, 2000, corpus)
    assert checked > 1200


@pytest.mark.parametrize("pattern", ["a^b", "a$b", "x(^a)", "(a$)b", "(^a)*", "(a|b$)+", "$x", "x^"])
def test_anchors_that_something_precedes_or_follows_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError, match="anchor"):
        parse_ere(pattern)


@pytest.mark.parametrize("pattern", ["^a|b$", "(^a|b)", "^(a|b)$", "(^a|b$)", "^$", "((^a))c", "a(b$)"])
def test_anchors_at_the_ends_are_accepted(pattern: str) -> None:
    parse_ere(pattern)


# --- end to end: the same answers through sandboxed workers, either engine ------------

SAMPLE_CALLS: list[dict[str, Any]] = [
    {"pattern": "Failed password for (root|admin)", "max_lines": 7},
    {"pattern": "failed PASSWORD", "ignore_case": True, "max_lines": 3},
    {"pattern": "sshd", "count_only": True},
    {"pattern": "Accepted (password|publickey)", "order": "newest_first", "max_lines": 4},
    {"pattern": "session opened", "since": "2026-11-22T00:00:00Z", "until": "2026-11-23T12:00:00Z", "max_lines": 50},
    {"pattern": "Invalid user [a-z]+ from", "context": 1, "max_lines": 3},
    {"pattern": "^zzz-nothing", "max_lines": 5},
    {"pattern": "\u00e9", "max_lines": 5},
    {
        "pattern": "INVALID USER [_-z]+ FROM",
        "ignore_case": True,
        "max_lines": 3,
    },  # grep -i refused the range as written
]


def _policy(directory: Path, log: Path, engine: str) -> Path:
    directory.mkdir()
    toml = (
        f'[search]\nengine = "{engine}"\n'
        "[rate_limit]\ncalls = 100000\nwindow_s = 1\nglobal_calls = 100000\nglobal_window_s = 1\n"
    )
    return write_policy(directory, [{"path": str(log), "rotations": True}], toml=toml)


async def _answers(policy: Path, log: Path) -> list[Any]:
    answers = []
    async with bastion_client(policy) as client:
        for arguments in SAMPLE_CALLS:
            result = await client.call_tool("query_logs", {"log_path": str(log), **arguments})
            assert not result.is_error, result.content
            answers.append(result.structured_content)
    return answers


@pytest.mark.anyio
async def test_both_engines_give_the_same_answers_end_to_end(tmp_path: Path) -> None:
    """Rotations (plain and gzip), windows, case, counts, order: identical results;
    the audit names the engine, and context lines always go to grep."""
    log = SAMPLE_LOGS / "auth.log"
    by_grep = await _answers(_policy(tmp_path / "grep", log, "grep"), log)
    by_rg = await _answers(_policy(tmp_path / "rg", log, "rg"), log)
    assert by_rg == by_grep
    assert any(answer["lines"] for answer in by_rg) and any(answer["total_matches"] for answer in by_rg)
    engines = [r["engine"] for r in read_audit(tmp_path / "rg" / "audit.jsonl") if r["event"] == "end"]
    assert engines == ["grep" if "context" in call else "rg" for call in SAMPLE_CALLS]
    assert {r["engine"] for r in read_audit(tmp_path / "grep" / "audit.jsonl") if r["event"] == "end"} == {"grep"}


def test_engine_rg_without_ripgrep_refuses_to_serve(tmp_path: Path) -> None:
    """Fail closed on a promise the host cannot keep: a profile whose ripgrep is missing."""
    profiles = tmp_path / "profiles"
    shutil.copytree(
        Path(sandbox_profiles.__file__).parent, profiles, ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    grep_toml = profiles / "grep.toml"
    grep_toml.write_text(
        grep_toml.read_text().replace(
            'optional_executables = ["/usr/bin/rg"]', 'optional_executables = ["/nonexistent/rg"]'
        )
    )
    policy = _policy(tmp_path / "p", SAMPLE_LOGS / "auth.log", "rg")
    served = subprocess.run(
        [str(BASTION), "serve", "--policy", str(policy), "--profiles-dir", str(profiles)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert (
        served.returncode != 0
        and b"refusing to serve" in served.stderr
        and b"ripgrep is not installed" in served.stderr
    )


def test_auto_takes_ripgrep_for_large_scans_only() -> None:
    def engine(policy: str, ripgrep: bool, size: int, context: int = 0) -> str:
        request = SearchRequest(pattern="a(b|c)", max_lines=10, max_line_bytes=100, context=context)
        return search_engine.choose(request, parse_ere(request.pattern), policy, ripgrep, [size]).engine

    big, small = search_engine.RG_MIN_BYTES, search_engine.RG_MIN_BYTES - 1
    assert engine("auto", True, big) == "rg" and engine("auto", True, small) == "grep"
    assert engine("auto", False, big) == "grep" and engine("grep", True, big) == "grep"
    assert engine("rg", True, small) == "rg" and engine("rg", True, big, context=2) == "grep"
    chosen = search_engine.choose(
        SearchRequest(pattern="a(b|c)", max_lines=1, max_line_bytes=100), parse_ere("a(b|c)"), "rg", True, [0]
    )
    assert chosen.rg_pattern == "(?-u)a(?:b|c)" and chosen.pattern == "a(b|c)"


def _files(request: SearchRequest) -> list[tuple[str | None, bool]]:
    return [(spec.engine, spec.join) for spec in request.files]


def test_auto_chooses_per_file_and_joins_the_small_ones() -> None:
    """Under "auto" each file's own size decides (not the total), small files and .gz share
    one engine with their neighbours of the same engine, and a large plain file runs alone."""
    big, small = search_engine.RG_MIN_BYTES, 1 << 20
    files = [SearchFile(), SearchFile(), SearchFile(gzip=True), SearchFile(), SearchFile()]
    sizes = [small, small, small, big, small]

    def chosen(policy: str, **fields: Any) -> SearchRequest:
        request = SearchRequest(pattern="a", max_lines=1, max_line_bytes=100, files=[*map(copy.copy, files)], **fields)
        return search_engine.choose(request, parse_ere("a"), policy, True, sizes)

    auto = chosen("auto")
    assert _files(auto) == [("grep", False), ("grep", True), ("grep", True), ("rg", False), ("grep", False)]
    assert search_engine.engines(auto) == "grep+rg" and auto.rg_pattern == "(?-u)a" and auto.engine == "grep"
    assert _files(chosen("rg")) == [("rg", False), ("rg", True), ("rg", True), ("rg", False), ("rg", False)]
    assert search_engine.engines(chosen("rg")) == "rg" and chosen("rg").engine == "rg"
    assert search_engine.engines(chosen("grep")) == "grep" and chosen("grep").rg_pattern == ""
    assert [join for _, join in _files(chosen("grep"))] == [False, True, True, False, False]
    for unjoined in (chosen("auto", context=1), chosen("auto", count_only=True)):
        assert not any(join for _, join in _files(unjoined))
    assert [join for _, join in _files(chosen("auto", count_only=True, since=0.0))] == [False, True, True, False, False]


def test_grep_is_given_the_rendering_not_the_clients_text() -> None:
    request = SearchRequest(pattern="[_-z]", max_lines=1, max_line_bytes=100, ignore_case=True)
    chosen = search_engine.choose(request, parse_ere(request.pattern), "grep", True, [0])
    assert chosen.engine == "grep" and chosen.pattern == "[_`a-z]"


@pytest.mark.slow
@pytest.mark.parametrize(
    "pattern", ["([[:print:]]{255}){39}", "(\\w{99}){99}", "((a|b|c|d){50}){40}", "((\u00e9){255}){30}"]
)
def test_patterns_at_the_size_limit_run_on_both_engines(pattern: str, corpus: Path) -> None:
    """The largest automata the parser allows: no engine refuses them (e.g. a size limit)."""
    _same_lines(pattern, corpus)


# --- byte-order marks: the bytes are searched as they are, by either engine ---------

BOMS = {"utf-16le": b"\xff\xfe", "utf-16be": b"\xfe\xff", "utf-8": b"\xef\xbb\xbf"}
BOM_LINES = [
    b"Oct  1 00:00:%02d web-01 sshd[%d]: Failed password for root from 10.0.0.%d port 22 ssh2"
    % (i % 60, 4000 + i, i % 250)
    for i in range(99)
] + [b"Oct  1 00:01:40 web-01 sshd[4100]: Accepted publickey for alice"]
BOM_CALLS: list[dict[str, Any]] = [
    {"pattern": "Failed password", "count_only": True},
    {"pattern": "Failed password", "max_lines": 2},
    {"pattern": "^Oct", "max_lines": 2},  # the first line starts with the mark, not with Oct
    {"pattern": "Accepted", "order": "newest_first", "max_lines": 1},  # byte offsets count the mark
]


async def _bom_answers(policy: Path, logs: list[Path]) -> list[Any]:
    answers = []
    async with bastion_client(policy) as client:
        for log in logs:
            for arguments in BOM_CALLS:
                result = await client.call_tool("query_logs", {"log_path": str(log), **arguments})
                assert not result.is_error, result.content
                answers.append(result.structured_content)
    return answers


@pytest.mark.anyio
async def test_a_byte_order_mark_changes_nothing_on_either_engine(tmp_path: Path) -> None:
    """ripgrep transcoded files starting with a UTF-16 mark (and dropped a UTF-8 one):
    such a log answered 0 'Failed password' lines on the large-file path."""
    logs = []
    for name, mark in BOMS.items():
        logs.append(tmp_path / f"{name}.log")
        logs[-1].write_bytes(mark + b"\n".join(BOM_LINES) + b"\n")
    entries: list[str | Path | dict[str, Any]] = list(logs)
    answers = {}
    for engine in ("grep", "rg"):
        (tmp_path / engine).mkdir()
        toml = f'[search]\nengine = "{engine}"\n'
        answers[engine] = await _bom_answers(write_policy(tmp_path / engine, entries, toml=toml), logs)
    assert answers["rg"] == answers["grep"]
    counts = [answer["total_matches"] for answer in answers["rg"][0 :: len(BOM_CALLS)]]
    assert counts == [99, 99, 99]
    assert [len(answer["lines"]) for answer in answers["rg"][2 :: len(BOM_CALLS)]] == [2, 2, 2]
    assert {line["line_no"] for answer in answers["rg"][2 :: len(BOM_CALLS)] for line in answer["lines"]} == {2, 3}


@pytest.mark.anyio
async def test_a_byte_order_mark_changes_nothing_at_any_size(tmp_path: Path) -> None:
    """Under "auto" a small log goes to grep and one of RG_MIN_BYTES to ripgrep: a
    UTF-16 mark on both gives the same answer, scaled by the copies."""
    small, large = tmp_path / "small.log", tmp_path / "large.log"
    body = b"\n".join(BOM_LINES) + b"\n"
    copies = search_engine.RG_MIN_BYTES // len(body) + 1
    small.write_bytes(BOMS["utf-16le"] + body)
    large.write_bytes(BOMS["utf-16le"] + body * copies)
    toml = '[search]\nengine = "auto"\n'
    policy = write_policy(tmp_path, [small, large], toml=toml)
    counts = []
    async with bastion_client(policy) as client:
        for log in (small, large):
            result = await client.call_tool(
                "query_logs", {"log_path": str(log), "pattern": "Failed password", "count_only": True}
            )
            assert not result.is_error, result.content
            counts.append(result.structured_content["total_matches"])
    assert counts == [99, 99 * copies]
    engines = [record["engine"] for record in read_audit(tmp_path / "audit.jsonl") if record["event"] == "end"]
    assert engines == ["grep", "rg"]


@pytest.mark.anyio
async def test_auto_runs_each_rotation_on_its_own_engine_with_the_same_answers(tmp_path: Path) -> None:
    """A current log of RG_MIN_BYTES beside small plain and .gz rotations: under "auto" the
    large file runs on ripgrep and the rotations on one joined grep, the answers are those of
    grep alone, and the audit says "grep+rg" (context lines: "grep")."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for source in sorted(SAMPLE_LOGS.glob("auth.log*")):
        shutil.copy2(source, logs / source.name)
    log = logs / "auth.log"
    stat = log.stat()
    body = log.read_bytes()
    log.write_bytes(body * (search_engine.RG_MIN_BYTES // len(body) + 1))
    os.utime(log, (stat.st_atime, stat.st_mtime))
    by_grep = await _answers(_policy(tmp_path / "grep", log, "grep"), log)
    by_auto = await _answers(_policy(tmp_path / "auto", log, "auto"), log)
    assert by_auto == by_grep and any(answer["lines"] for answer in by_auto)
    engines = [r["engine"] for r in read_audit(tmp_path / "auto" / "audit.jsonl") if r["event"] == "end"]
    assert engines == ["grep" if "context" in call else "grep+rg" for call in SAMPLE_CALLS]
