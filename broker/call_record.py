"""One call's end record, typed: what the envelope (broker/calls.py), the tool that ran
and the call's last worker (broker/pool/outcome.py) know about a call.

It is written once, as the audit "end" record, by audit_fields(): the keys and
their order are the ones README.md's audit table and example show (the hash
chain covers the line as written). A field left None is absent from the line,
except what a search reply always names (truncated_reason: null, not truncated)
and a worker's fate (exit_code, signal, peak_memory_kb may be null).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from broker.errors import Outcome, ToolError, UnknownName
from broker.pool.outcome import WorkerEnd
from broker.pool.worker_process import SandboxUnavailable, Worker, WorkerResult

Reply = Literal["ok", "output_capped"]  # the outcomes of a call that produced its reply
PREVIEW_CHARS = 500  # of the result, redacted, in the end record


def preview(text: str) -> str:
    return text[:PREVIEW_CHARS] + ("…" if len(text) > PREVIEW_CHARS else "")


def final_outcome(reply: Reply | None, raised: BaseException | None) -> Outcome:
    """The call's one outcome. What ended the call wins: an exception over the reply it
    interrupted, the reply over the state of the call's workers (a worker's own state is
    never the call's outcome: raise_for turns every unusable one into a ToolError)."""
    if isinstance(raised, ToolError):
        return raised.outcome
    if isinstance(raised, UnknownName):
        return "invalid"
    if isinstance(raised, anyio.get_cancelled_exc_class()):
        return "cancelled"
    if raised is not None:  # SandboxUnavailable, or a bug: the client gets a generic error
        return "internal_error"
    return reply if reply is not None else "internal_error"  # a tool must say how its reply went


@dataclass(frozen=True)
class SearchEnd:
    """query_logs' reply: files searched, workers used, lines returned, why it is incomplete."""

    files: int
    workers: int
    lines: int
    truncated_reason: str | None
    bytes: int  # received from every worker of the call (the worker part has only the last one's)


@dataclass(frozen=True)
class Coverage:
    """query_logs: files of the log that were not searched, and why (only when there are some)."""

    files_skipped: int
    files_left_out: int
    files_timed_out: int
    skipped: list[str]


@dataclass
class CallRecord:
    """Filled in as the call runs; every field but stop_after_reply is audit material."""

    reply: Reply | None = None  # set by the tool with its reply
    raised: BaseException | None = None  # what ended the call instead (ended_by)
    error: str | None = None
    trace: str | None = None
    address: str | None = None  # check_ip_reputation
    bytes_scanned: int | None = None  # query_logs, from its first batch on
    engine: str | None = None
    worker: WorkerEnd | None = None  # the call's last worker
    search: SearchEnd | None = None
    verdict: str | None = None
    matches: int | None = None
    result_preview: str | None = None
    earlier_workers_cpu_s: float | None = None  # query_logs with more than one worker
    coverage: Coverage | None = None
    # Never written: a worker that sent its final reply, to stop once the reply is out.
    stop_after_reply: tuple[Worker, WorkerResult] | None = None

    @property
    def outcome(self) -> Outcome:
        return final_outcome(self.reply, self.raised)

    def ended_by(self, exc: BaseException) -> None:
        """The call ended with an exception (called in its except clause): the audit keeps why."""
        self.raised = exc
        if isinstance(exc, ToolError):
            self.error = exc.message
        elif isinstance(exc, UnknownName):
            self.error = str(exc)
        elif isinstance(exc, SandboxUnavailable):
            self.error = f"sandbox unavailable: {exc}"
        elif isinstance(exc, Exception):  # not a cancellation
            self.error, self.trace = repr(exc), traceback.format_exc(limit=8)

    def audit_fields(self, duration_ms: float) -> dict[str, Any]:
        """The end record's fields, in the order they have always had."""
        outcome = self.outcome
        fields: dict[str, Any] = {"outcome": outcome}
        _put(fields, address=self.address, bytes_scanned=self.bytes_scanned, engine=self.engine)
        if self.worker is not None:
            fields.update(self.worker.audit_fields())
        if self.search is not None:
            search = self.search
            fields.update(files=search.files, workers=search.workers, lines=search.lines)
            fields.update(truncated_reason=search.truncated_reason, bytes=search.bytes)  # bytes: in its place
        _put(fields, verdict=self.verdict, matches=self.matches, result_preview=self.result_preview)
        _put(fields, earlier_workers_cpu_s=self.earlier_workers_cpu_s)
        if self.coverage is not None:
            coverage = self.coverage
            fields.update(files_skipped=coverage.files_skipped, files_left_out=coverage.files_left_out)
            fields.update(files_timed_out=coverage.files_timed_out, skipped=coverage.skipped)
        _put(fields, error=self.error, trace=self.trace)
        fields.update(duration_ms=duration_ms, success=outcome in ("ok", "output_capped"))
        return fields


def _put(fields: dict[str, Any], **values: object) -> None:
    """Add the values that are set; None means absent from the record."""
    fields.update({key: value for key, value in values.items() if value is not None})
