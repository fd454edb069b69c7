"""Every request gets an answer and an audit record, over stdio and HTTP: arguments nested
100 to 100,000 levels deep, batches and other malformed messages, oversized ones, and
resources/read URIs whose percent-escapes are not UTF-8. Answers are short JSON-RPC
errors that name the rule, never the SDK's validation text or the input."""

from __future__ import annotations

import itertools
import json
import os
import selectors
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from broker.audit.verify import verify
from broker.transport.jsonrpc_gate import MAX_DEPTH, MAX_MESSAGE_BYTES
from tests.conftest import BASTION, read_audit, write_policy
from tests.test_http import INITIALIZE, TOKENS, Served, free_port, http_policy

MARKER = "ECHO-MARKER-7f3a"  # in every bad message: an answer that echoes the input shows it
LEAKS = (
    "pydantic",
    "JSONRPC",
    "alidation error",
    "input_value",
    "input_type",
    "Traceback",
    "/usr/",
    "site-packages",
    MARKER,
)
DEEP = [100, 200, 1000, 100_000]


def nested(depth: int) -> str:
    return "[" * depth + json.dumps(MARKER) + "]" * depth


def call_line(request_id: int, arguments: str) -> bytes:
    head = f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{{"name":"query_logs","arguments":'
    return (head + arguments + "}}").encode()


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    return 0


# Malformed messages: (name, raw bytes, JSON-RPC code, the id the answer must carry).
MALFORMED: list[tuple[str, bytes, int, Any]] = [
    ("batch", json.dumps([{"jsonrpc": "2.0", "id": 90, "method": "tools/list"}, MARKER]).encode(), -32600, None),
    ("empty-batch", b"[]", -32600, None),
    ("number", b"5", -32600, None),
    ("string", json.dumps(MARKER).encode(), -32600, None),
    ("null", b"null", -32600, None),
    ("invalid-json", b'{"jsonrpc":"2.0","id":91,"method":"' + MARKER.encode(), -32700, None),
    ("not-utf8", b'{"jsonrpc":"2.0","id":92,"method":"tools/list","params":{"x":"\xff\xfe"}}', -32700, None),
    ("lone-surrogate", b'{"jsonrpc":"2.0","id":93,"method":"tools/list","params":{"x":"\\ud800"}}', -32700, None),
    ("nan", b'{"jsonrpc":"2.0","id":94,"method":"tools/list","params":{"x":NaN}}', -32700, None),
    ("wrong-version", json.dumps({"jsonrpc": "1.0", "id": 95, "method": MARKER}).encode(), -32600, 95),
    ("no-version", json.dumps({"id": 96, "method": MARKER}).encode(), -32600, 96),
    ("no-method", json.dumps({"jsonrpc": "2.0", "id": 97, "params": {"x": MARKER}}).encode(), -32600, 97),
    (
        "params-array",
        json.dumps({"jsonrpc": "2.0", "id": 98, "method": "tools/list", "params": [MARKER]}).encode(),
        -32600,
        98,
    ),
    ("method-number", json.dumps({"jsonrpc": "2.0", "id": 99, "method": 7, "x": MARKER}).encode(), -32600, 99),
    ("id-bool", json.dumps({"jsonrpc": "2.0", "id": True, "method": MARKER}).encode(), -32600, None),
    ("id-object", json.dumps({"jsonrpc": "2.0", "id": {"x": MARKER}, "method": "tools/list"}).encode(), -32600, None),
    ("bad-response", json.dumps({"jsonrpc": "2.0", "id": 100, "error": MARKER}).encode(), -32600, 100),
    (
        "too-large",
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 101,
                "method": "tools/list",
                "params": {"x": MARKER * (MAX_MESSAGE_BYTES // len(MARKER))},
            }
        ).encode(),
        -32600,
        None,
    ),
]

# Deep values elsewhere than in tool arguments: (name, line, audited tool or None, code, answer id).
DEEP_ELSEWHERE: list[tuple[str, bytes, str | None, int, Any]] = [
    (
        "resources/read _meta",
        b'{"jsonrpc":"2.0","id":110,"method":"resources/read","params":{"uri":"file:///x","_meta":{"x":'
        + nested(300).encode()
        + b"}}}",
        "resources/read",
        -32602,
        110,
    ),
    (
        "prompts/get arguments",
        b'{"jsonrpc":"2.0","id":111,"method":"prompts/get","params":{"name":"triage_auth_failures","arguments":{"x":'
        + nested(300).encode()
        + b"}}}",
        "prompts/get",
        -32602,
        111,
    ),
    (
        "tools/list _meta",
        b'{"jsonrpc":"2.0","id":112,"method":"tools/list","params":{"_meta":' + nested(5000).encode() + b"}}",
        None,
        -32602,
        112,
    ),
    ("id", b'{"jsonrpc":"2.0","id":' + nested(300).encode() + b',"method":"tools/list"}', None, -32600, None),
]

BAD_URIS = [
    ("not-utf8", "file:///x%ff%fe", "uri must be"),
    ("overlong-dot", "file:///var/log/%C0%AE%C0%AE/etc/shadow", "uri must be"),
    ("surrogate", "file:///x%ED%A0%80", "uri must be"),
    ("nul", "file:///var/log/auth.log%00.txt", "NUL"),
    ("encoded-slash-dotdot", "file:///var/log%2F..%2F..%2Fetc%2Fshadow", "normalized"),
]


def assert_short_error(answer: dict[str, Any], code: int, request_id: Any) -> None:
    assert set(answer) == {"jsonrpc", "id", "error"}, answer
    assert answer["id"] == request_id and answer["error"]["code"] == code, answer
    message = answer["error"]["message"]
    assert 10 < len(message) < 200 and set(answer["error"]) == {"code", "message"}, answer
    assert not any(leak in json.dumps(answer["error"]) for leak in LEAKS), answer


# --- stdio ---------------------------------------------------------------------------


class RawStdio:
    """One `bastion serve` spoken to in raw JSON-RPC lines."""

    def __init__(self, policy: Path) -> None:
        self.proc = subprocess.Popen(
            [str(BASTION), "serve", "--policy", str(policy)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        self._buffer = b""
        self.send(json.dumps(INITIALIZE).encode())
        assert "result" in self.receive()
        self.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def receive(self, timeout_s: float = 20) -> dict[str, Any]:
        """The next message from the server (one request is in flight at a time)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                assert time.monotonic() < deadline, "no answer"
                if selector.select(timeout=0.1):
                    chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                    assert chunk, "the server closed stdout"
                    self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def stdio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawStdio, Path]]:
    directory = tmp_path_factory.mktemp("stdio")
    log = directory / "auth.log"
    log.write_text("sshd Failed password for root\n")
    policy = write_policy(
        directory,
        [log],
        toml="[rate_limit]\ncalls = 100000\nwindow_s = 1\nglobal_calls = 100000\nglobal_window_s = 1\n",
    )
    server = RawStdio(policy)
    try:
        yield server, directory / "audit.jsonl"
    finally:
        assert server.close() == 0
        assert verify([str(directory / "audit.jsonl")]).problem is None


ids = itertools.count(1000)


def new_records(audit: Path, before: int) -> list[dict[str, Any]]:
    return read_audit(audit)[before:]


def assert_refused_call(records: list[dict[str, Any]], tool: str) -> dict[str, Any]:
    begin, end = records
    assert (begin["event"], end["event"], end["call"]) == ("begin", "end", begin["seq"]), records
    assert end["tool"] == tool and end["outcome"] == "invalid" and end["success"] is False
    assert depth_of(end["arguments"]) <= MAX_DEPTH and len(json.dumps(end)) < 20_000
    return end


@pytest.mark.parametrize("depth", DEEP)
def test_deep_arguments_are_answered_and_audited_over_stdio(stdio: tuple[RawStdio, Path], depth: int) -> None:
    server, audit = stdio
    before = len(read_audit(audit))
    request_id = next(ids)
    server.send(call_line(request_id, '{"pattern":' + nested(depth) + "}"))
    answer = server.receive()
    assert_short_error(answer, -32602, request_id)
    assert f"at most {MAX_DEPTH} levels" in answer["error"]["message"]
    end = assert_refused_call(new_records(audit, before), "query_logs")
    assert "[TOO DEEP]" in json.dumps(end["arguments"])


def test_arguments_within_the_depth_limit_reach_the_tool_over_stdio(stdio: tuple[RawStdio, Path]) -> None:
    server, audit = stdio
    request_id = next(ids)
    server.send(call_line(request_id, '{"log_path":"/x","pattern":' + nested(MAX_DEPTH - 4) + "}"))
    answer = server.receive()
    assert answer["id"] == request_id and answer["result"]["isError"] is True
    assert "pattern must be" in answer["result"]["content"][0]["text"]


@pytest.mark.parametrize(("name", "line", "code", "request_id"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_messages_get_a_short_error_and_a_record_over_stdio(
    stdio: tuple[RawStdio, Path], name: str, line: bytes, code: int, request_id: Any
) -> None:
    server, audit = stdio
    before = len(read_audit(audit))
    server.send(line)
    assert_short_error(server.receive(), code, request_id)
    (record,) = new_records(audit, before)
    assert record["event"] == "rejected" and record["error"].startswith(("invalid request", "parse error"))
    assert MARKER not in json.dumps(record) or name == "too-large"


@pytest.mark.parametrize(
    ("name", "line", "tool", "code", "request_id"), DEEP_ELSEWHERE, ids=[d[0] for d in DEEP_ELSEWHERE]
)
def test_deep_values_anywhere_are_answered_over_stdio(
    stdio: tuple[RawStdio, Path], name: str, line: bytes, tool: str | None, code: int, request_id: Any
) -> None:
    server, audit = stdio
    before = len(read_audit(audit))
    server.send(line)
    assert_short_error(server.receive(), code, request_id)
    records = new_records(audit, before)
    if tool is not None:
        assert_refused_call(records, tool)
    else:
        assert [r["event"] for r in records] == ["rejected"]


def test_huge_but_shallow_values_are_answered_and_cut_in_the_record_over_stdio(stdio: tuple[RawStdio, Path]) -> None:
    server, audit = stdio
    before = len(read_audit(audit))
    request_id = next(ids)
    server.send(call_line(request_id, json.dumps({"x": [7] * 500_000, "y": "z" * 1_000_000})))
    answer = server.receive()
    assert answer["result"]["isError"] is True and "unknown argument" in answer["result"]["content"][0]["text"]
    begin, end = new_records(audit, before)
    assert len(json.dumps(begin)) < 20_000 and len(json.dumps(end)) < 20_000


def test_the_server_still_serves_after_all_that_over_stdio(stdio: tuple[RawStdio, Path]) -> None:
    server, _ = stdio
    request_id = next(ids)
    server.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}).encode())
    answer = server.receive()
    assert answer["id"] == request_id and answer["result"]["tools"]


@pytest.mark.parametrize(("name", "uri", "needle"), BAD_URIS, ids=[u[0] for u in BAD_URIS])
def test_bad_resource_uris_are_clear_refusals_over_stdio(
    stdio: tuple[RawStdio, Path], name: str, uri: str, needle: str
) -> None:
    server, audit = stdio
    before = len(read_audit(audit))
    request_id = next(ids)
    server.send(
        json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "resources/read", "params": {"uri": uri}}).encode()
    )
    answer = server.receive()
    # a 2025 protocol session: "resource not found" is -32002, with the URI as sent (SEP-2164)
    assert answer["id"] == request_id and answer["error"]["code"] == -32002, answer
    assert answer["error"]["data"] == {"uri": uri}
    assert needle in answer["error"]["message"] and "internal" not in answer["error"]["message"]
    begin, end = new_records(audit, before)
    assert begin["arguments"] == {"uri": uri} and end["outcome"] == "invalid"


# --- HTTP ----------------------------------------------------------------------------


class RawHttp:
    """A Streamable HTTP session (protocol 2025-06-18) spoken to in raw POSTs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.headers = {
            "Authorization": f"Bearer {TOKENS['alice']}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        opened = self.post(json.dumps(INITIALIZE).encode())
        assert opened.status_code == 200, opened.text
        self.headers.update({"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"})
        assert self.post(b'{"jsonrpc":"2.0","method":"notifications/initialized"}').status_code == 202

    def post(self, body: bytes) -> httpx2.Response:
        return httpx2.post(self.url, headers=self.headers, content=body, timeout=30)

    def answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        response = self.post(body)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            data = [line[5:] for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()]
            return response.status_code, json.loads(data[-1])
        return response.status_code, response.json()


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawHttp, Path]]:
    directory = tmp_path_factory.mktemp("http")
    served = Served(http_policy(directory), free_port())
    try:
        yield RawHttp(served.url), directory / "audit.jsonl"
        code, _ = served.stop()
        assert code == 0
        assert verify([str(directory / "audit.jsonl")]).problem is None
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait(timeout=10)


@pytest.mark.parametrize("depth", DEEP)
def test_deep_arguments_are_answered_and_audited_over_http(http: tuple[RawHttp, Path], depth: int) -> None:
    client, audit = http
    before = len(read_audit(audit))
    request_id = next(ids)
    status, answer = client.answer(call_line(request_id, '{"pattern":' + nested(depth) + "}"))
    assert status == 400
    assert_short_error(answer, -32602, request_id)
    end = assert_refused_call(new_records(audit, before), "query_logs")
    assert end["client"] == "alice"


@pytest.mark.parametrize(("name", "line", "code", "request_id"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_messages_get_a_short_error_and_a_record_over_http(
    http: tuple[RawHttp, Path], name: str, line: bytes, code: int, request_id: Any
) -> None:
    client, audit = http
    before = len(read_audit(audit))
    status, answer = client.answer(line)
    assert status == (413 if name == "too-large" else 400)
    assert_short_error(answer, code, request_id)
    (record,) = new_records(audit, before)
    assert record["event"] == "rejected" and record["client"] == "alice"


@pytest.mark.parametrize(
    ("name", "line", "tool", "code", "request_id"), DEEP_ELSEWHERE, ids=[d[0] for d in DEEP_ELSEWHERE]
)
def test_deep_values_anywhere_are_answered_over_http(
    http: tuple[RawHttp, Path], name: str, line: bytes, tool: str | None, code: int, request_id: Any
) -> None:
    client, audit = http
    before = len(read_audit(audit))
    status, answer = client.answer(line)
    assert status == 400
    assert_short_error(answer, code, request_id)
    records = new_records(audit, before)
    if tool is not None:
        assert_refused_call(records, tool)
    else:
        assert [r["event"] for r in records] == ["rejected"]


@pytest.mark.parametrize(("name", "uri", "needle"), BAD_URIS, ids=[u[0] for u in BAD_URIS])
def test_bad_resource_uris_are_clear_refusals_over_http(
    http: tuple[RawHttp, Path], name: str, uri: str, needle: str
) -> None:
    client, audit = http
    before = len(read_audit(audit))
    request_id = next(ids)
    _, answer = client.answer(
        json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "resources/read", "params": {"uri": uri}}).encode()
    )
    # a 2025 protocol session: "resource not found" is -32002, with the URI as sent (SEP-2164)
    assert answer["id"] == request_id and answer["error"]["code"] == -32002, answer
    assert answer["error"]["data"] == {"uri": uri}
    assert needle in answer["error"]["message"]
    begin, end = new_records(audit, before)
    assert end["outcome"] == "invalid" and end["client"] == "alice"


def test_the_server_still_serves_after_all_that_over_http(http: tuple[RawHttp, Path]) -> None:
    client, _ = http
    request_id = next(ids)
    status, answer = client.answer(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}).encode())
    assert status == 200 and answer["id"] == request_id and answer["result"]["tools"]


def test_a_malformed_body_without_a_token_is_refused_by_auth_first(http: tuple[RawHttp, Path]) -> None:
    """The screening sits behind the bearer check: no token, no reading of the body, no record."""
    client, audit = http
    before = len(read_audit(audit))
    headers = {name: value for name, value in client.headers.items() if name != "Authorization"}
    response = httpx2.post(client.url, headers=headers, content=b"[1, 2]", timeout=30)
    assert response.status_code == 401
    assert len(read_audit(audit)) == before
