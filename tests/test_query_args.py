"""query_logs in the broker: argument validation, input/output schemas and the output byte cap."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from bastion_wire.protocol import Line
from broker.errors import ToolError
from broker.policy import Limits, LogEntry
from broker.tools.query_logs import tool as query_logs
from broker.tools.query_logs.ere import parse_ere
from broker.tools.query_logs.tool import (
    DEFAULT_MAX_LINES,
    OUTPUT_SCHEMA,
    QueryArgs,
    cap_lines,
    input_schema,
    parse,
    result,
)

LIMITS = Limits(max_lines=1000)
LOG = "/var/log/auth.log"


def error_of(arguments: object, limits: Limits = LIMITS) -> str:
    with pytest.raises(ToolError) as raised:
        parse(arguments, limits)
    assert raised.value.outcome == "invalid"
    return raised.value.message


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ([], "arguments must be an object"),
        (["log_path", "pattern"], "arguments must be an object"),
        ("log_path=/var/log/auth.log", "arguments must be an object"),
        (42, "arguments must be an object"),
        (None, "missing required argument(s): log_path, pattern"),
        ({}, "missing required argument(s): log_path, pattern"),
        ({"log_path": LOG}, "missing required argument(s): pattern"),
        ({"pattern": "x"}, "missing required argument(s): log_path"),
        ({"max_lines": 5}, "missing required argument(s): log_path, pattern"),
    ],
)
def test_shape_errors(arguments: object, needle: str) -> None:
    assert needle in error_of(arguments)


@pytest.mark.parametrize(
    ("extra", "listed"),
    [
        ({"verbose": True}, ["'verbose'"]),
        ({"path": LOG}, ["'path'"]),
        ({"Pattern": "x", "zz": 1}, ["'Pattern'", "'zz'"]),
        ({"max-lines": 5}, ["'max-lines'"]),
    ],
)
def test_unknown_arguments_are_listed(extra: dict[str, Any], listed: list[str]) -> None:
    message = error_of({"log_path": LOG, "pattern": "x", **extra})
    assert message.startswith("unknown argument(s): ")
    for name in listed:
        assert name in message
    assert "accepted: context, count_only, ignore_case, log_path, max_lines, order, pattern, since, until" in message


def test_unknown_argument_names_are_bounded() -> None:
    huge = "a" * 10_000  # sorts first, so it is among the names echoed
    many = {f"extra{i:02d}": i for i in range(50)}
    message = error_of({"log_path": LOG, "pattern": "x", huge: 1, **many})
    assert f"'{'a' * 40}'" in message and "a" * 41 not in message
    assert "'extra03'" in message and "'extra04'" not in message  # at most five names
    assert len(message) < 300


def test_unknown_argument_reported_even_if_required_missing() -> None:
    assert error_of({"bogus": 1}).startswith("unknown argument(s): 'bogus'")


@pytest.mark.parametrize("pattern", [None, 5, 1.5, True, ["a"], {"a": 1}, b"abc", ""])
def test_pattern_must_be_non_empty_string(pattern: object) -> None:
    assert error_of({"log_path": LOG, "pattern": pattern}) == "pattern must be a non-empty string"


@pytest.mark.parametrize("max_lines", [0, -1, 1001, 10**12, 1.5, 100.0, "10", True, False, None, [10]])
def test_bad_max_lines(max_lines: object) -> None:
    message = error_of({"log_path": LOG, "pattern": "x", "max_lines": max_lines})
    assert message.startswith("max_lines must be")
    assert "1000" in message


@pytest.mark.parametrize("max_lines", [1, 2, 100, 999, 1000])
def test_good_max_lines(max_lines: int) -> None:
    assert parse({"log_path": LOG, "pattern": "x", "max_lines": max_lines}, LIMITS).max_lines == max_lines


@pytest.mark.parametrize(("policy_max", "default"), [(1000, 100), (100, 100), (50, 50), (1, 1)])
def test_default_max_lines(policy_max: int, default: int) -> None:
    assert DEFAULT_MAX_LINES == 100
    parsed = parse({"log_path": LOG, "pattern": "x"}, Limits(max_lines=policy_max))
    assert parsed == QueryArgs(log_path=LOG, pattern="x", pattern_tree=parse_ere("x"), max_lines=default)


@pytest.mark.parametrize(("policy_max", "requested"), [(50, 51), (50, 100), (1, 2)])
def test_max_lines_bounded_by_policy(policy_max: int, requested: int) -> None:
    message = error_of({"log_path": LOG, "pattern": "x", "max_lines": requested}, Limits(max_lines=policy_max))
    assert message == f"max_lines must be between 1 and {policy_max}"


@pytest.mark.parametrize(
    "pattern", ["-f/etc/shadow", "--help", "-e", "-", "--", "-rn root /etc", "Failed password", "^a.*b$"]
)
def test_option_like_patterns_accepted_verbatim(pattern: str) -> None:
    assert parse({"log_path": LOG, "pattern": pattern}, LIMITS).pattern == pattern


@pytest.mark.parametrize("pattern", ["(", r"\1", "(a)\\1", "a{", "[z-a]", "*a", "a" * 2000])
def test_invalid_patterns(pattern: str) -> None:
    assert error_of({"log_path": LOG, "pattern": pattern}).startswith("invalid pattern")


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (
            "a*(^b)",
            "invalid pattern: '^' anchors only at the start of the pattern or of a branch: after other items it holds "
            "only where they all match empty text (as in a*(^b)), which is rarely what was meant"
            "; for a literal write \\^ (at offset 2)",
        ),
        (
            "[[:alpha:]-z]",
            "invalid pattern: ambiguous '-' after a character class;"
            " put a literal '-' first or last in the brackets (at offset 11)",
        ),
    ],
)
def test_pattern_refusals_the_client_sees(pattern: str, text: str) -> None:
    assert error_of({"log_path": LOG, "pattern": pattern}) == text


def test_log_path_passed_through_untouched() -> None:
    """log_path is validated later, by the allowlist; parse only carries it."""
    for value in [LOG, 42, "../x"]:
        assert parse({"log_path": value, "pattern": "x"}, LIMITS).log_path == value


def test_pattern_checked_before_max_lines() -> None:
    assert error_of({"log_path": LOG, "pattern": "(", "max_lines": 0}).startswith("invalid pattern")


# --- cap_lines ---------------------------------------------------------------


def lines_of(*texts: str) -> list[Line]:
    return [Line(i, text) for i, text in enumerate(texts, 1)]


@pytest.mark.parametrize(
    ("texts", "budget", "kept", "cut"),
    [
        ((), 0, 0, False),
        (("a",), 17, 1, False),  # 1 byte + 16 overhead
        (("a",), 16, 0, True),
        (("aa", "bb", "cc"), 54, 3, False),
        (("aa", "bb", "cc"), 53, 2, True),
        (("aa", "bb", "cc"), 36, 2, True),
        (("é",), 18, 1, False),  # 2 UTF-8 bytes
        (("é",), 17, 0, True),
        (("日本",), 22, 1, False),
        (("日本",), 21, 0, True),
        (("x" * 100, "y"), 10_000, 2, False),
        (("x" * 100, "y"), 116, 1, True),
    ],
)
def test_cap_lines(texts: tuple[str, ...], budget: int, kept: int, cut: bool) -> None:
    lines = lines_of(*texts)
    got, was_cut = cap_lines(lines, budget)
    assert got == lines[:kept]
    assert was_cut is cut
    assert sum(len(line.text.encode()) + 16 for line in got) <= budget


def test_cap_lines_never_splits_a_line() -> None:
    lines = lines_of(*(f"line {i} " + "z" * i for i in range(50)))
    for budget in range(0, 3000, 37):
        got, was_cut = cap_lines(lines, budget)
        assert got == lines[: len(got)]
        assert was_cut == (len(got) < len(lines))


# --- the search options --------------------------------------------------------------

NOW = 1_795_800_000.0  # 2026-11-27T14:40:00Z


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": 1795800000}, "since"),
        ({"since": "2026-11-25", "until": "2026-11-24"}, "since is after until"),
        ({"context": 11}, "context must be between 0 and 10"),
        ({"context": True}, "context must be an integer"),
        ({"context": 2, "count_only": True}, "cannot be combined with count_only"),
        ({"ignore_case": "yes"}, "ignore_case must be true or false"),
        ({"count_only": 1}, "count_only must be true or false"),
        ({"order": "newest"}, "order must be one of: oldest_first, newest_first"),
        ({"order": None}, "order must be one of"),
    ],
)
def test_bad_search_options(extra: dict[str, Any], needle: str) -> None:
    with pytest.raises(ToolError, match=needle):
        parse({"log_path": LOG, "pattern": "x", **extra}, LIMITS, now=NOW)


def test_search_options_are_parsed() -> None:
    args = parse(
        {
            "log_path": LOG,
            "pattern": "x",
            "since": "-2h",
            "until": "now",
            "context": 3,
            "ignore_case": True,
            "order": "newest_first",
        },
        LIMITS,
        now=NOW,
    )
    assert (args.since, args.until) == (NOW - 7200, NOW)
    assert args.context == 3 and args.ignore_case and args.newest_first and not args.count_only
    defaults = parse({"log_path": LOG, "pattern": "x"}, LIMITS, now=NOW)
    assert (
        defaults.since,
        defaults.until,
        defaults.context,
        defaults.ignore_case,
        defaults.count_only,
        defaults.newest_first,
    ) == (None, None, 0, False, False, False)


# --- schemas -----------------------------------------------------------------


@pytest.mark.parametrize("policy_max", [1, 50, 1000, 100_000])
def test_input_schema(policy_max: int) -> None:
    schema = input_schema(Limits(max_lines=policy_max))
    jsonschema.Draft202012Validator.check_schema(schema)
    max_lines = schema["properties"]["max_lines"]
    assert max_lines["maximum"] == policy_max and max_lines["minimum"] == 1
    assert max_lines["default"] == min(100, policy_max)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == query_logs.ARGUMENTS
    assert set(schema["required"]) == query_logs.REQUIRED


def test_log_path_is_an_enum_of_exact_entries() -> None:
    """Plain files are all that is accepted: a strict client refuses anything else."""
    logs = [LogEntry("/var/log/auth.log"), LogEntry("/var/log/syslog"), LogEntry("/var/log/auth.log")]
    schema = input_schema(LIMITS, logs)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["log_path"]["enum"] == ["/var/log/auth.log", "/var/log/syslog"]
    assert "examples" not in schema["properties"]["log_path"]
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"log_path": "/var/log/syslog", "pattern": "x"})
    assert not validator.is_valid({"log_path": "/var/log/messages", "pattern": "x"})


@pytest.mark.parametrize(
    "other",
    [LogEntry("/var/log/nginx/*.log"), LogEntry("/var/log/kern.log", rotations=True)],
    ids=["glob", "rotations"],
)
def test_log_path_lists_examples_when_more_is_accepted(other: LogEntry) -> None:
    """A glob's single files and a log's rotations are accepted but are no entry: examples,
    so a strict client does not refuse /var/log/nginx/access.log or kern.log.1."""
    schema = input_schema(LIMITS, [LogEntry("/var/log/auth.log"), other])
    log_path = schema["properties"]["log_path"]
    assert log_path["examples"] == ["/var/log/auth.log", other.path] and "enum" not in log_path
    assert jsonschema.Draft202012Validator(schema).is_valid({"log_path": "/var/log/nginx/access.log", "pattern": "x"})


@pytest.mark.parametrize(("count", "listed"), [(50, True), (51, False)])
def test_log_path_lists_at_most_fifty_entries(count: int, listed: bool) -> None:
    logs = [LogEntry(f"/var/log/host{n}.log") for n in range(count)]
    log_path = input_schema(LIMITS, logs)["properties"]["log_path"]
    assert ("enum" in log_path) is listed
    assert "list_logs" in log_path["description"]
    if listed:
        assert log_path["enum"] == [entry.path for entry in logs]


@pytest.mark.parametrize(
    ("arguments", "valid"),
    [
        ({"log_path": LOG, "pattern": "x"}, True),
        ({"log_path": LOG, "pattern": "x", "max_lines": 50}, True),
        ({"log_path": LOG, "pattern": "x", "max_lines": 51}, False),
        ({"log_path": LOG, "pattern": "x", "max_lines": 0}, False),
        ({"log_path": LOG, "pattern": ""}, False),
        ({"log_path": LOG, "pattern": "x", "extra": 1}, False),
        ({"log_path": LOG}, False),
        ({"log_path": LOG, "pattern": "x", "context": 10, "ignore_case": True, "order": "newest_first"}, True),
        ({"log_path": LOG, "pattern": "x", "context": 11}, False),
        ({"log_path": LOG, "pattern": "x", "context": -1}, False),
        ({"log_path": LOG, "pattern": "x", "order": "random"}, False),
        ({"log_path": LOG, "pattern": "x", "ignore_case": 1}, False),
        ({"log_path": LOG, "pattern": "x", "count_only": "true"}, False),
        ({"log_path": LOG, "pattern": "x", "since": "2026-11-24", "until": "2026-11-25T00:00:00Z"}, True),
    ],
)
def test_input_schema_agrees_with_parse(arguments: dict[str, Any], valid: bool) -> None:
    limits = Limits(max_lines=50)
    schema_ok = jsonschema.Draft202012Validator(input_schema(limits)).is_valid(arguments)
    try:
        parse(arguments, limits)
        parse_ok = True
    except ToolError:
        parse_ok = False
    assert schema_ok is valid and parse_ok is valid


@pytest.mark.parametrize(
    ("lines", "reason", "head"),
    [
        ([], None, "0 matching line(s) in /var/log/auth.log"),
        ([Line(1, "a"), Line(7, "b \\x1b")], None, "2 matching line(s)"),
        ([Line(3, "x")], "max_lines", "(stopped at max_lines; more matches exist)"),
        ([Line(3, "x")], "max_output_bytes", "(output cap reached; narrow the pattern)"),
    ],
)
def test_result_matches_output_schema(lines: list[Line], reason: str | None, head: str) -> None:
    call = result(LOG, [LOG], [False], lines, None, reason, [])
    structured = call.structured_content
    jsonschema.validate(structured, OUTPUT_SCHEMA)
    assert structured == {
        "log_path": LOG,
        "lines": [{"file": LOG, "line_no": line.line_no, "text": line.text, "context": False} for line in lines],
        "files": [{"path": LOG, "compressed": False, "matches": None}],
        "total_matches": None,
        "truncated": reason is not None,
        "truncated_reason": reason,
        "notes": [],
    }
    assert not call.is_error
    text = call.content[0].text
    assert head in text.splitlines()[0]
    for line in lines:
        assert f"{line.line_no}: {line.text}" in text.splitlines()


def test_result_with_several_files_context_and_counts() -> None:
    files = [LOG + ".1", LOG]
    lines = [Line(4, "before", 0, True), Line(5, "hit", 0, False), Line(2, "hit", 1, False)]
    call = result(LOG, files, [False, False], lines, None, None, ["auth.log.1: something"])
    jsonschema.validate(call.structured_content, OUTPUT_SCHEMA)
    text = call.content[0].text.splitlines()
    assert text[0] == f"2 matching line(s) in {LOG} (2 files)"
    assert text[1:] == [f"{LOG}.1:4- before", f"{LOG}.1:5: hit", f"{LOG}:2: hit", "note: auth.log.1: something"]
    counted = result(LOG, files, [False, True], [], [3, 4], None, [])
    jsonschema.validate(counted.structured_content, OUTPUT_SCHEMA)
    assert counted.structured_content["total_matches"] == 7
    assert [f["matches"] for f in counted.structured_content["files"]] == [3, 4]


GOOD_RESULT: dict[str, Any] = {
    "log_path": LOG,
    "lines": [{"file": LOG, "line_no": 1, "text": "a", "context": False}],
    "files": [{"path": LOG, "compressed": False, "matches": None}],
    "total_matches": None,
    "truncated": False,
    "truncated_reason": None,
    "notes": [],
}


def test_the_good_result_is_valid() -> None:
    jsonschema.validate(GOOD_RESULT, OUTPUT_SCHEMA)


@pytest.mark.parametrize(
    "bad",
    [
        {**GOOD_RESULT, "truncated_reason": "timeout"},
        {**GOOD_RESULT, "lines": [{"file": LOG, "line_no": 0, "text": "a", "context": False}]},
        {**GOOD_RESULT, "lines": [{"line_no": 1, "text": "a"}]},
        {key: value for key, value in GOOD_RESULT.items() if key != "truncated_reason"},
        {key: value for key, value in GOOD_RESULT.items() if key != "notes"},
        {**GOOD_RESULT, "files": [{"path": LOG, "compressed": "no", "matches": None}]},
        {**GOOD_RESULT, "extra": 1},
    ],
)
def test_output_schema_is_strict(bad: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, OUTPUT_SCHEMA)
