"""The call's end record: which outcome wins, and the fields and their order in the audit.

The end-to-end tests (test_faults, test_e2e_stdio, test_glob_coverage, ...) check what
real calls write; these pin the rules themselves, case by case.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion_wire.protocol import Failed
from broker.call_record import CallRecord, Coverage, Reply, SearchEnd, final_outcome, preview
from broker.errors import Outcome, ToolError, UnknownName
from broker.pool.outcome import worker_end
from broker.pool.worker_process import SandboxUnavailable, WorkerResult

pytestmark = pytest.mark.anyio  # which exception is a cancellation depends on the event loop

OUTCOMES = [
    # reply the tool shaped, what ended the call instead, the audit outcome
    ("ok", None, "ok"),
    ("output_capped", None, "output_capped"),
    (None, None, "internal_error"),  # a tool that returned without naming its outcome
    (None, ToolError("bad argument"), "invalid"),
    (None, ToolError("rate limited", "denied_rate"), "denied_rate"),
    (None, ToolError("busy", "busy"), "busy"),
    (None, ToolError("timed out", "timeout"), "timeout"),
    (None, ToolError("the search stopped", "limit_exceeded"), "limit_exceeded"),
    (None, ToolError("failed", "worker_crashed"), "worker_crashed"),
    (None, ToolError("failed", "sandbox_violation"), "sandbox_violation"),
    ("ok", ToolError("after the reply was shaped", "internal_error"), "internal_error"),
    (None, UnknownName("unknown tool: 'x'"), "invalid"),
    (None, asyncio.CancelledError(), "cancelled"),
    ("ok", asyncio.CancelledError(), "cancelled"),
    (None, SandboxUnavailable("no user namespaces"), "internal_error"),
    (None, ValueError("a bug"), "internal_error"),
]


@pytest.mark.parametrize(("reply", "raised", "outcome"), OUTCOMES, ids=[f"{c[0]}-{c[1]!r}" for c in OUTCOMES])
async def test_what_ended_the_call_wins_over_its_reply(
    reply: Reply | None, raised: BaseException | None, outcome: Outcome
) -> None:
    assert final_outcome(reply, raised) == outcome


def _replied(**fields: Any) -> WorkerResult:
    return WorkerResult(outcome="ok", bytes_received=120, **fields)


def _reaped(outcome: str, **fields: Any) -> WorkerResult:
    return WorkerResult(outcome=outcome, bytes_received=40, reaped=True, cpu_s=0.5, max_rss_kb=9000, **fields)


FATE = {"exit_code": None, "signal": None, "stopped_after_reply": False, "cpu_s": 0.5, "max_rss_kb": 9000}


async def test_a_tool_error_after_a_worker_result_decides_the_outcome() -> None:
    record = CallRecord(address="192.0.2.1", worker=worker_end(7, _replied()))
    try:
        raise ToolError("the threat-intel database is damaged", "internal_error")
    except ToolError as exc:
        record.ended_by(exc)
    assert list(record.audit_fields(1.5).items()) == [
        ("outcome", "internal_error"),
        ("address", "192.0.2.1"),
        ("worker_pid", 7),
        ("bytes", 120),
        ("worker_exit", "follows"),
        ("error", "the threat-intel database is damaged"),
        ("duration_ms", 1.5),
        ("success", False),
    ]


async def test_a_cancelled_call_keeps_its_worker_fate_and_names_no_error() -> None:
    record = CallRecord(bytes_scanned=0, engine="grep", worker=worker_end(8, _reaped("cancelled", signal="SIGKILL")))
    try:
        raise asyncio.CancelledError
    except asyncio.CancelledError as exc:
        record.ended_by(exc)
    assert list(record.audit_fields(3.0).items()) == [
        ("outcome", "cancelled"),
        ("bytes_scanned", 0),
        ("engine", "grep"),
        ("worker_pid", 8),
        ("bytes", 40),
        *{**FATE, "signal": "SIGKILL", "peak_memory_kb": None}.items(),
        ("duration_ms", 3.0),
        ("success", False),
    ]


def test_an_engine_killed_by_its_limits_is_named_after_the_worker_error() -> None:
    failed = WorkerResult(outcome="failed", failure=Failed("engine_killed", "SIGXCPU"), bytes_received=30)
    assert list(worker_end(9, failed).audit_fields()) == [
        "worker_pid",
        "bytes",
        "worker_exit",
        "worker_error",
        "signal",
    ]
    reaped = _reaped("worker_crashed", failure=Failed("engine_killed", "SIGSYS"), detail="it died")
    fields = worker_end(9, reaped).audit_fields()
    assert list(fields)[2:] == [*FATE, "peak_memory_kb", "detail", "worker_error"]  # signal in the fate's place
    assert fields["signal"] == "SIGSYS"


async def test_a_search_reply_has_the_fields_in_their_order() -> None:
    record = CallRecord(
        reply="output_capped",
        bytes_scanned=4096,
        engine="ripgrep",
        worker=worker_end(10, _replied()),
        search=SearchEnd(files=40, workers=2, lines=3, truncated_reason="max_output_bytes", bytes=300),
        result_preview="a\nb\nc",
        earlier_workers_cpu_s=0.25,
        coverage=Coverage(files_skipped=1, files_left_out=0, files_timed_out=0, skipped=["/l/x.gz: truncated"]),
    )
    fields = record.audit_fields(9.25)
    assert list(fields) == [
        "outcome",
        "bytes_scanned",
        "engine",
        "worker_pid",
        "bytes",
        "worker_exit",
        "files",
        "workers",
        "lines",
        "truncated_reason",
        "result_preview",
        "earlier_workers_cpu_s",
        "files_skipped",
        "files_left_out",
        "files_timed_out",
        "skipped",
        "duration_ms",
        "success",
    ]
    assert fields["bytes"] == 300 and fields["outcome"] == "output_capped" and fields["success"] is True


async def test_an_untruncated_search_says_so_with_null() -> None:
    record = CallRecord(reply="ok", search=SearchEnd(files=1, workers=1, lines=0, truncated_reason=None, bytes=0))
    assert record.audit_fields(1.0)["truncated_reason"] is None


async def test_the_worker_to_stop_after_the_reply_is_never_written() -> None:
    record = CallRecord(reply="ok", stop_after_reply=(object(), WorkerResult()))  # type: ignore[arg-type]
    assert list(record.audit_fields(0.5)) == ["outcome", "duration_ms", "success"]


async def test_an_internal_error_keeps_its_trace_for_the_audit_only() -> None:
    record = CallRecord()
    try:
        raise KeyError("slot")
    except KeyError as exc:
        record.ended_by(exc)
    fields = record.audit_fields(2.0)
    assert fields["outcome"] == "internal_error" and fields["error"] == "KeyError('slot')"
    assert "KeyError" in fields["trace"] and list(fields)[-4:] == ["error", "trace", "duration_ms", "success"]


def test_preview_is_cut_at_500_characters() -> None:
    assert preview("x" * 500) == "x" * 500
    assert preview("x" * 501) == "x" * 500 + "…"
