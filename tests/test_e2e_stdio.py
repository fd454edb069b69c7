"""End to end: `bastion serve` as a subprocess, driven by the mcp SDK's own client over stdio."""

from __future__ import annotations

import random
import time
from pathlib import Path

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from broker.tools.resources import log_uri
from tests.conftest import SAMPLE_LOGS, bastion_client, read_audit, wait_no_workers, write_policy

pytestmark = pytest.mark.anyio

AUTH = SAMPLE_LOGS / "auth.log"
ACCESS = SAMPLE_LOGS / "access.log"
SYSLOG = SAMPLE_LOGS / "syslog"
# A valid ERE whose DFA has ~2^16 states: on random a/b text GNU grep keeps
# building new states and needs ~0.6 s per MB in the C locale the worker uses.
SLOW_PATTERN = "[ab]*a[ab]{16}c"


@pytest.fixture
def sample_policy(tmp_path: Path) -> Path:
    return write_policy(tmp_path, [AUTH, ACCESS, SYSLOG])


def grep_lines(path: Path, needle: bytes) -> list[int]:
    return [number for number, line in enumerate(path.read_bytes().split(b"\n"), 1) if needle in line]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_list_and_search_sample_log(sample_policy: Path, mode: str) -> None:
    async with bastion_client(sample_policy, mode=mode) as client:
        assert client.server_info is not None and client.server_info.name == "bastion"
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert list(tools) == ["list_logs", "query_logs"]
        assert tools["query_logs"].output_schema["required"] == [
            "log_path",
            "lines",
            "files",
            "total_matches",
            "truncated",
            "truncated_reason",
            "notes",
        ]
        result = await client.call_tool(
            "query_logs", {"log_path": str(AUTH), "pattern": "Accepted password for deploy", "max_lines": 5}
        )
    assert not result.is_error
    structured = result.structured_content
    assert [line["line_no"] for line in structured["lines"]] == grep_lines(AUTH, b"Accepted password for deploy")
    assert structured["truncated"] is False and structured["truncated_reason"] is None
    assert "Accepted password for deploy" in result.content[0].text


async def test_max_lines_stops_and_reports_truncation(sample_policy: Path) -> None:
    expected = grep_lines(AUTH, b"Failed password")
    assert len(expected) > 10
    async with bastion_client(sample_policy) as client:
        result = await client.call_tool(
            "query_logs", {"log_path": str(AUTH), "pattern": "Failed password", "max_lines": 10}
        )
    assert [line["line_no"] for line in result.structured_content["lines"]] == expected[:10]
    assert result.structured_content["truncated_reason"] == "max_lines"


async def test_each_error_class_is_a_tool_error_without_internals(sample_policy: Path, tmp_path: Path) -> None:
    cases = [
        ({"log_path": "/etc/shadow", "pattern": "root"}, "not an allowlisted log"),
        ({"log_path": str(SAMPLE_LOGS / ".." / "logs" / "auth.log"), "pattern": "x"}, "normalized"),
        ({"log_path": "auth.log", "pattern": "x"}, "absolute"),
        ({"log_path": str(AUTH), "pattern": "(unclosed"}, "invalid pattern"),
        ({"log_path": str(AUTH), "pattern": r"(a*)*\1"}, "backreferences"),
        ({"log_path": str(AUTH), "pattern": "x", "max_lines": 0}, "max_lines"),
        ({"log_path": str(AUTH), "pattern": "x", "max_lines": 1001}, "max_lines"),
        ({"log_path": str(AUTH), "pattern": "x", "verbose": True}, "unknown argument"),
        ({"log_path": str(AUTH)}, "missing required argument"),
        ({"log_path": str(AUTH), "pattern": ""}, "pattern"),
    ]
    async with bastion_client(sample_policy) as client:
        for arguments, expected in cases:
            result = await client.call_tool("query_logs", arguments)
            text = result.content[0].text
            assert result.is_error, arguments
            assert expected in text, (arguments, text)
            assert "Traceback" not in text and str(tmp_path) not in text
        with pytest.raises(MCPError) as raised:
            await client.call_tool("delete_logs", {})
        assert raised.value.error.code == types.INVALID_PARAMS
        # The server is still serving after all that.
        ok = await client.call_tool("query_logs", {"log_path": str(AUTH), "pattern": "sshd", "max_lines": 1})
        assert not ok.is_error


async def test_patterns_that_look_like_options_are_just_patterns(tmp_path: Path) -> None:
    log = tmp_path / "tricky.log"
    log.write_bytes(b"line one\nuser ran grep -f/etc/shadow here\nshow --help text\n")
    policy = write_policy(tmp_path, [log])
    async with bastion_client(policy) as client:
        for pattern, line_no in [("-f/etc/shadow", 2), ("--help", 3)]:
            result = await client.call_tool("query_logs", {"log_path": str(log), "pattern": pattern})
            assert not result.is_error, result.content[0].text
            assert [line["line_no"] for line in result.structured_content["lines"]] == [line_no]


async def test_resources_list_and_read(sample_policy: Path) -> None:
    async with bastion_client(sample_policy) as client:
        resources = (await client.list_resources()).resources
        assert {str(resource.uri) for resource in resources} == {log_uri(str(p)) for p in (AUTH, ACCESS, SYSLOG)}
        assert all(resource.mime_type == "text/plain" for resource in resources)
        templates = await client.list_resource_templates()
        assert [t.uri_template for t in templates.resource_templates] == ["file://{+log_path}"]
        contents = (await client.read_resource(log_uri(str(SYSLOG)))).contents[0]
        last_line = SYSLOG.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
        assert contents.text.rstrip("\n").endswith(last_line)
        for bad in ["file:///etc/passwd", "file:///nonexistent/x.log", "http://example.invalid/x"]:
            with pytest.raises(MCPError) as raised:
                await client.read_resource(bad)
            assert raised.value.error.code == types.INVALID_PARAMS


async def test_resource_read_returns_only_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(b"".join(b"line %06d\n" % n for n in range(20000)))  # 240 KB
    policy = write_policy(tmp_path, [log], resource_bytes=4096)
    async with bastion_client(policy) as client:
        text = (await client.read_resource(log_uri(str(log)))).contents[0].text
    lines = text.splitlines()
    assert lines[-1] == "line 019999"
    assert len(text) <= 4096 and all(line.startswith("line ") and len(line) == 11 for line in lines)


async def test_untrusted_log_text_is_escaped_and_cut(tmp_path: Path) -> None:
    log = tmp_path / "hostile.log"
    log.write_bytes(
        b"EVIL user \x1b[31mroot\x1b[0m\n"
        b"EVIL nul \x00 and bell \x07\n"
        b"EVIL bad utf8 \xff\xfe\n"
        b"EVIL bidi \xe2\x80\xae reversed\n"
        b"EVIL long " + b"A" * 10000 + b"\n"
    )
    policy = write_policy(tmp_path, [log], max_line_bytes=256)
    async with bastion_client(policy) as client:
        result = await client.call_tool("query_logs", {"log_path": str(log), "pattern": "EVIL"})
    texts = [line["text"] for line in result.structured_content["lines"]]
    assert texts[0] == "EVIL user \\x1b[31mroot\\x1b[0m"
    assert texts[1] == "EVIL nul \\x00 and bell \\x07"
    assert texts[2] == "EVIL bad utf8 \ufffd\ufffd"
    assert texts[3] == "EVIL bidi \\u202e reversed"
    assert texts[4].startswith("EVIL long AAAA") and texts[4].endswith("more bytes]")
    assert len(texts[4]) < 400
    assert all(ord(c) >= 0x20 or c == "\t" for text in texts for c in text)


async def test_slow_search_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    log = tmp_path / "slow.log"
    rng = random.Random(7)
    log.write_bytes(b"".join(bytes(rng.choice(b"ab") for _ in range(120)) + b" sshd\n" for _ in range(64000)))  # 8 MB
    policy = write_policy(
        tmp_path, [log], toml='[search]\nengine = "grep"\n', timeout_s=0.5
    )  # ripgrep would finish in time
    async with bastion_client(policy) as client:
        started = time.monotonic()
        result = await client.call_tool("query_logs", {"log_path": str(log), "pattern": SLOW_PATTERN})
        elapsed = time.monotonic() - started
        after = await client.call_tool("query_logs", {"log_path": str(log), "pattern": "sshd", "max_lines": 1})
    assert result.is_error and "timed out" in result.content[0].text
    assert 0.45 <= elapsed < 10.0, elapsed  # stopped near timeout_s=0.5, not after the ~5 s grep needs
    assert not after.is_error
    end = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"][0]
    assert end["outcome"] == "timeout" and end["signal"] == "SIGKILL"
    assert wait_no_workers() == []


async def test_output_cap_stops_reading_and_says_so(tmp_path: Path) -> None:
    log = tmp_path / "chatty.log"
    log.write_bytes(b"".join(b"match %05d " % n + b"x" * 200 + b"\n" for n in range(20000)))
    policy = write_policy(tmp_path, [log], max_output_bytes=16384, max_lines=20000)
    async with bastion_client(policy) as client:
        result = await client.call_tool("query_logs", {"log_path": str(log), "pattern": "match", "max_lines": 20000})
    structured = result.structured_content
    assert structured["truncated_reason"] == "max_output_bytes"
    assert 0 < len(structured["lines"]) < 100
    assert sum(len(line["text"]) for line in structured["lines"]) <= 16384
    end = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"][0]
    assert end["outcome"] == "output_capped"
    assert end["bytes"] < 200_000  # the broker stopped reading; it did not drain 4 MB


@pytest.mark.slow
async def test_early_stop_does_not_read_the_whole_file(tmp_path: Path) -> None:
    log = tmp_path / "large.log"
    block = b"".join(
        b"Nov 24 06:25:%02d web-01 sshd[%d]: Failed password for root from 45.155.205.233 port 4%04d ssh2\n"
        % (n % 60, n, n)
        for n in range(10000)
    )
    with log.open("wb") as file:
        for _ in range(100):  # ~100 MB
            file.write(block)
    size = log.stat().st_size
    policy = write_policy(tmp_path, [log])
    async with bastion_client(policy) as client:
        result = await client.call_tool(
            "query_logs", {"log_path": str(log), "pattern": "Failed password", "max_lines": 100}
        )
    assert len(result.structured_content["lines"]) == 100
    assert result.structured_content["truncated_reason"] == "max_lines"
    end = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"][0]
    # The descriptor's shared offset shows how far grep read: a few KB, not 100 MB.
    assert end["bytes_scanned"] < 1_000_000 < size, end["bytes_scanned"]


async def test_every_call_is_audited_and_no_worker_is_left(sample_policy: Path, tmp_path: Path) -> None:
    async with bastion_client(sample_policy) as client:
        await client.call_tool("query_logs", {"log_path": str(AUTH), "pattern": "sshd", "max_lines": 3})
        await client.call_tool("query_logs", {"log_path": "/etc/shadow", "pattern": "root"})
        await client.read_resource(log_uri(str(AUTH)))
    records = read_audit(tmp_path / "audit.jsonl")
    events = [(r["event"], r.get("tool"), r.get("outcome")) for r in records]
    assert events[0][0] == "server_start" and events[-1][0] == "server_stop"
    assert ("end", "query_logs", "ok") in events and ("end", "query_logs", "invalid") in events
    assert ("end", "resources/read", "ok") in events
    begins = {r["seq"] for r in records if r["event"] == "begin"}
    assert begins == {r["call"] for r in records if r["event"] == "end"}
    ok = next(r for r in records if r["event"] == "end" and r["outcome"] == "ok")
    # Stopped once the reply was out: how it ended is in the worker_exit record after the end.
    assert ok["worker_exit"] == "follows" and "cpu_s" not in ok
    (fate,) = [r for r in records if r["event"] == "worker_exit" and r["call"] == ok["call"]]
    assert fate["seq"] > ok["seq"] and fate["worker_pid"] == ok["worker_pid"] and fate["tool"] == "query_logs"
    assert fate["stopped_after_reply"] is True and fate["signal"] is None and fate["exit_code"] is None
    assert fate["cpu_s"] > 0 and fate["max_rss_kb"] > 0
    assert wait_no_workers() == []


async def test_refuses_to_start_when_audit_log_cannot_be_opened(tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import BASTION

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    policy = write_policy(tmp_path, [AUTH], audit=blocker / "audit.jsonl")
    proc = subprocess.run([str(BASTION), "serve", "--policy", str(policy)], input=b"", capture_output=True, timeout=30)
    assert proc.returncode == 3
    assert b"refusing to serve" in proc.stderr and proc.stdout == b""
