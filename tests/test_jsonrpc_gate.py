"""The message screen on its own: depth is counted outside strings only, the limit is exact,
a cut message still parses, and the scan is linear (4 MiB of brackets in well under a second)."""

from __future__ import annotations

import json
import time

import mcp_types as types
import pytest

from broker.transport.jsonrpc_gate import CUT, MAX_DEPTH, MAX_MESSAGE_BYTES, Refusal, error_line, screen


def call(arguments: str) -> bytes:
    return (
        '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"query_logs","arguments":' + arguments + "}}"
    ).encode()


def depth_arguments(levels: int) -> str:
    """Arguments that make the whole message exactly `levels` deep (message, params, arguments: 3)."""
    inner = levels - 3
    return '{"pattern":' + "[" * inner + "1" + "]" * inner + "}"


def test_the_limit_is_exact() -> None:
    assert not isinstance(screen(call(depth_arguments(MAX_DEPTH))), Refusal)
    refused = screen(call(depth_arguments(MAX_DEPTH + 1)))
    assert isinstance(refused, Refusal) and refused.code == types.INVALID_PARAMS and refused.id == 7
    assert refused.method == "tools/call" and CUT in json.dumps(refused.params)


@pytest.mark.parametrize("text", ["[" * 5000, "]" * 5000 + "{" * 5000, '\\"[[[[' * 1000, "\\\\" * 100 + "{{{{" * 100])
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    message = screen(call(json.dumps({"pattern": text})))
    assert not isinstance(message, Refusal), message
    assert isinstance(message, types.JSONRPCRequest) and message.params["arguments"]["pattern"] == text


def test_a_cut_message_names_its_call_and_parses() -> None:
    refused = screen(call('{"a":' + "[" * 100_000 + "]" * 100_000 + ',"b":"kept"}'))
    assert isinstance(refused, Refusal)
    assert refused.params["arguments"]["b"] == "kept"
    answer = json.loads(error_line(refused))
    assert answer == {"jsonrpc": "2.0", "id": 7, "error": {"code": types.INVALID_PARAMS, "message": refused.message}}


def test_an_unclosed_deep_message_is_a_parse_error() -> None:
    refused = screen(call('{"a":' + "[" * 1000))
    assert isinstance(refused, Refusal) and refused.code == types.PARSE_ERROR and refused.id is None


def test_the_scan_is_linear() -> None:
    half = (MAX_MESSAGE_BYTES - 200) // 2
    started = time.monotonic()
    refused = screen(call('{"a":' + "[" * half + "]" * half + "}"))
    assert isinstance(refused, Refusal) and refused.code == types.INVALID_PARAMS
    assert time.monotonic() - started < 3  # ~0.7 s on the 2-core development VM
    strings = json.dumps({"a": ["[x]"] * 300_000})
    started = time.monotonic()
    assert not isinstance(screen(call(strings)), Refusal)
    assert time.monotonic() - started < 3


def test_one_byte_too_many_is_refused_before_parsing() -> None:
    refused = screen(b" " * (MAX_MESSAGE_BYTES + 1))
    assert isinstance(refused, Refusal) and refused.code == types.INVALID_REQUEST and "at most" in refused.message
