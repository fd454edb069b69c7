"""Escape and abuse attempts through REAL tool calls: a hostile search engine behind `bastion serve`.

A --profiles-dir copy of the grep profile names payloads/hostile.c (static)
as its executable, so query_logs runs it exactly as it runs GNU grep: inside
a confined grep worker, the log on stdin, stdout parsed as `N:text`. The
pattern selects the hostile behaviour. Each case uses its own server session
and checks, besides the case's own expectation, that the same session still
serves resources/read (the untouched `resource` profile), and that no worker
or engine process outlives the session.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from broker.pool.outcome import WORKER_FAILED
from broker.tools.resources import log_uri
from tests.conftest import BASTION, read_audit, wait_no_workers, write_policy
from tests.sandbox.conftest import profiles_copy
from tests.sandbox.harness import Results, kill_all, lingering
from tests.sandbox.listeners import Listeners

pytestmark = [pytest.mark.sandbox, pytest.mark.anyio]

CALL_TIMEOUT_S = 30
LOG_TEXT = "first line of the allowlisted log\nlast line of the allowlisted log\n"
POLICY_LIMITS = {"timeout_s": 1, "max_output_bytes": 65536, "max_lines": 100000}


@dataclass(frozen=True)
class Reply:
    error: bool
    text: str
    structured: dict[str, Any] | None
    raised: str  # a client-side exception, "" if the call returned normally


Check = Callable[[Reply, dict[str, Any]], list[str]]


@dataclass(frozen=True)
class HostileCase:
    id: str
    pattern: str  # may use {tcp4_port} and {test_pid}
    expected: str
    check: Check
    known_weakness: str = ""


def _clean_error(reply: Reply, wanted: str) -> list[str]:
    problems = [] if reply.error and not reply.raised else [f"expected a tool error, got {reply}"]
    if wanted not in reply.text:
        problems.append(f"error text lacks {wanted!r}: {reply.text!r}")
    if "Traceback" in reply.text or "/tmp" in reply.text:
        problems.append("internals leaked into the error text")
    return problems


def _lines(reply: Reply) -> list[dict[str, Any]]:
    return list((reply.structured or {}).get("lines", []))


def check_probe(reply: Reply, end: dict[str, Any]) -> list[str]:
    texts = [line["text"] for line in _lines(reply)]
    if reply.error or len(texts) != 1:
        return [f"expected one result line, got {reply}"]
    wanted = ("shadow=BLOCKED", "tcp=BLOCKED", "kill=BLOCKED")
    if "ESCAPED" in texts[0] or not all(word in texts[0] for word in wanted):
        return [f"probe result not blocked: {texts[0]!r}"]
    return []


def check_flood(reply: Reply, end: dict[str, Any]) -> list[str]:
    reason = (reply.structured or {}).get("truncated_reason")
    problems = (
        []
        if not reply.error and reason == "max_output_bytes"
        else [f"expected truncation at max_output_bytes, got {reply.text[:200]!r} ({reason})"]
    )
    if end.get("outcome") != "output_capped":
        problems.append(f"audit outcome {end.get('outcome')!r}, expected 'output_capped'")
    return problems


def check_hang(reply: Reply, end: dict[str, Any]) -> list[str]:
    problems = _clean_error(reply, "timed out")
    return problems + ([] if end.get("outcome") == "timeout" else [f"audit outcome {end.get('outcome')!r}"])


def check_worker_failed(reply: Reply, end: dict[str, Any]) -> list[str]:
    return _clean_error(reply, WORKER_FAILED)


def check_sanitized(reply: Reply, end: dict[str, Any]) -> list[str]:
    texts = [line["text"] for line in _lines(reply)]
    if reply.error or len(texts) != 2:
        return [f"expected two sanitized lines, got {reply}"]
    unsafe = [text for text in texts if any(ord(c) < 0x20 and c != "\t" for c in text) or "\u202e" in text]
    missing = [token for token in ("\\x1b[31m", "\ufffd", "\\u202e", "\\x00", "\\x07") if token not in texts[0]]
    return ([f"unsanitized text: {unsafe!r}"] if unsafe else []) + ([f"escapes missing: {missing}"] if missing else [])


def check_line_numbers(reply: Reply, end: dict[str, Any]) -> list[str]:
    """Line numbers below 1 must never reach the client: a clean error, or only valid lines."""
    if reply.raised:
        return [f"the client rejected the result: {reply.raised}"]
    if reply.error:
        return _clean_error(reply, WORKER_FAILED)
    bad = [line for line in _lines(reply) if line["line_no"] < 1]
    return [f"line numbers below 1 reached the client: {bad}"] if bad else []


def check_syscall(reply: Reply, end: dict[str, Any]) -> list[str]:
    """The engine's seccomp death is a clean error for the client and a sandbox violation in the audit."""
    problems = _clean_error(reply, WORKER_FAILED)
    wanted = {"outcome": "sandbox_violation", "signal": "SIGSYS"}
    if any(end.get(key) != value for key, value in wanted.items()):
        problems.append(f"audit end has { ({key: end.get(key) for key in wanted}) }, expected {wanted}")
    return problems


def check_engine_error(reply: Reply, end: dict[str, Any]) -> list[str]:
    """The engine's own error reaches the client without its paths; the audit keeps them."""
    problems = _clean_error(reply, "the search engine reported an error: [path]: Invalid range end")
    if "/" in reply.text:
        problems.append(f"a path reached the client: {reply.text!r}")
    if "/var/log/private/app.log" not in str(end.get("worker_error")):
        problems.append(f"the audit lost the engine's message: {end.get('worker_error')!r}")
    return problems


CASES = [
    HostileCase("engine/probe-shadow-tcp-kill", "probe_{tcp4_port}_{test_pid}", "1 line, all BLOCKED", check_probe),
    HostileCase("engine/flood-stdout", "flood", "truncated max_output_bytes", check_flood),
    HostileCase("engine/hang", "hang", "tool error 'timed out'", check_hang),
    HostileCase("engine/garbage-output", "garbage", "clean tool error", check_worker_failed),
    HostileCase("engine/invalid-bytes", "badbytes", "sanitized lines", check_sanitized),
    HostileCase("engine/huge-line-number", "bignum", "clean tool error", check_worker_failed),
    HostileCase("engine/line-number-0-and-negative", "negative", "clean error or valid lines", check_line_numbers),
    HostileCase(
        "engine/stderr-with-paths", "stderrpaths", "tool error without paths; audit keeps them", check_engine_error
    ),
    HostileCase("engine/forbidden-syscall", "syscall", "tool error; audit sandbox_violation+SIGSYS", check_syscall),
]


@pytest.fixture(scope="session")
def hostile_profiles(programs: dict[str, Path], scratch: Path) -> Path:
    return profiles_copy(
        scratch / "profiles-hostile",
        {  # the hostile program is the only engine: no ripgrep
            'executables = ["/usr/bin/grep"]': f'executables = ["{programs["hostile"]}"]',
            'optional_executables = ["/usr/bin/rg"]': "optional_executables = []",
        },
    )


@asynccontextmanager
async def serve(policy: Path, profiles: Path) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=str(BASTION),
        args=["serve", "--policy", str(policy), "--profiles-dir", str(profiles)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    async with Client(params, read_timeout_seconds=CALL_TIMEOUT_S) as client:
        yield client


async def query(client: Client, log: Path, pattern: str) -> Reply:
    try:
        with anyio.fail_after(CALL_TIMEOUT_S):
            result = await client.call_tool(
                "query_logs", {"log_path": str(log), "pattern": pattern, "max_lines": 100000}
            )
    except Exception as exc:  # noqa: BLE001 - a client-side failure is itself the finding
        return Reply(True, "", None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    return Reply(bool(result.is_error), result.content[0].text, result.structured_content, "")


async def read_tail(client: Client, log: Path) -> str:
    with anyio.fail_after(CALL_TIMEOUT_S):
        return (await client.read_resource(log_uri(str(log)))).contents[0].text


def describe(reply: Reply, end: dict[str, Any]) -> str:
    if reply.raised:
        shown = f"client raised {reply.raised}"
    elif reply.error:
        shown = f"tool error: {reply.text}"
    else:
        lines = _lines(reply)
        first = lines[0]["text"][:48] if lines else ""
        shown = f"{len(lines)} line(s) {first!r} truncated={(reply.structured or {}).get('truncated_reason')}"
    return f"audit {end.get('outcome')}/{end.get('signal')}: {shown}"


def _param(case: HostileCase) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.known_weakness)] if case.known_weakness else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
async def test_hostile_engine(
    case: HostileCase,
    tmp_path: Path,
    hostile_profiles: Path,
    programs: dict[str, Path],
    listeners: Listeners,
    results: Results,
) -> None:
    log = tmp_path / "hostile.log"
    log.write_text(LOG_TEXT)
    policy = write_policy(tmp_path, [log], **POLICY_LIMITS)
    pattern = case.pattern.format(tcp4_port=listeners.values["tcp4_port"], test_pid=os.getpid())
    async with serve(policy, hostile_profiles) as client:
        reply = await query(client, log, pattern)
        tail = await read_tail(client, log)
    ends = [
        record
        for record in read_audit(tmp_path / "audit.jsonl")
        if record["event"] == "end" and record["tool"] == "query_logs"
    ]
    end = ends[-1] if ends else {}
    problems = case.check(reply, end)
    problems += [f"listener reached: {hit}" for hit in listeners.hits()]
    if not tail.rstrip("\n").endswith("last line of the allowlisted log"):
        problems.append(f"resources/read after the hostile call returned {tail!r}")
    left = wait_no_workers() + lingering(str(programs["hostile"]))
    if left:
        problems.append(f"processes left behind: {[proc.pid for proc in left]}")
        kill_all(left)
    verdict = ("FAILED (known, strict xfail)" if case.known_weakness else "FAILED") if problems else "contained"
    results.record(case.id, "grep (serve)", case.expected, describe(reply, end), verdict)
    assert not problems, f"{case.id}: {problems}"
