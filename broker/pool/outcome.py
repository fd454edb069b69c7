"""What a worker's end means: the fields it adds to the audit and the error a client sees.

A worker that sent its final reply is stopped after the reply is out, so its
fate goes to a later worker_exit record; any other end (timeout, crash,
garbage, SIGSYS, cancellation) is known before the end record and decides the
outcome the client and the audit see. A worker's own state (WorkerResult.outcome:
ok, failed, protocol_error, ...) is never the call's audit outcome by itself:
raise_for turns every unusable one into a ToolError that names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from broker.errors import Outcome, ToolError
from broker.pool.worker_process import WorkerResult
from broker.tools.query_logs.engine_error import client_text

WORKER_FAILED = "the worker running this call failed; the incident was recorded in the audit log"


@dataclass(frozen=True)
class Fate:
    """How a reaped worker ended, from wait4 and its cgroup (fields in the audit's order)."""

    exit_code: int | None
    signal: str | None
    stopped_after_reply: bool
    cpu_s: float
    max_rss_kb: int
    peak_memory_kb: int | None

    def audit_fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fate(result: WorkerResult) -> Fate:
    return Fate(
        exit_code=result.exit_code,
        signal=result.signal,
        stopped_after_reply=result.stopped_after_reply,
        cpu_s=result.cpu_s,
        max_rss_kb=result.max_rss_kb,
        peak_memory_kb=result.peak_memory_kb,
    )


@dataclass(frozen=True)
class WorkerEnd:
    """The last worker's part of the call's end record, as it stood when its call returned
    (a later stop, after the reply, goes to the worker_exit record instead)."""

    pid: int
    bytes: int
    fate: Fate | None  # reaped before the end record
    follows: bool  # it sent its final reply and is stopped after the reply: a worker_exit record follows
    detail: str = ""
    error: str | None = None  # the worker's Failed reply, whole (the client gets it path-free)
    engine_signal: str | None = None  # the engine's death, reported by the worker

    def audit_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"worker_pid": self.pid, "bytes": self.bytes}
        if self.fate is not None:
            fields.update(self.fate.audit_fields())
        elif self.follows:
            fields["worker_exit"] = "follows"
        if self.detail:
            fields["detail"] = self.detail
        if self.error is not None:
            fields["worker_error"] = self.error
        if self.engine_signal is not None:
            fields["signal"] = self.engine_signal  # in the fate's place if it has one, else last
        return fields


def worker_end(pid: int, result: WorkerResult) -> WorkerEnd:
    """The worker's part of the call's end record."""
    failure = result.failure
    return WorkerEnd(
        pid=pid,
        bytes=result.bytes_received,
        fate=fate(result) if result.reaped else None,
        follows=not result.reaped,
        detail=result.detail,
        error=f"{failure.code}: {failure.message}" if failure is not None else None,
        engine_signal=failure.message if failure is not None and failure.code == "engine_killed" else None,
    )


MEMORY_SLACK = 1 << 20  # a cgroup's peak stops just short of its limit when a kill frees memory


def raise_for(result: WorkerResult, timeout_s: float | None = None, memory_limit: int | None = None) -> None:
    """Nothing for a usable result; else the ToolError (message, audit outcome) for the client."""
    if result.outcome in ("ok", "output_capped"):
        return
    peak = result.peak_memory_kb
    if (
        result.outcome == "worker_crashed"
        and memory_limit
        and peak is not None
        and peak * 1024 >= memory_limit - MEMORY_SLACK
    ):
        # The worker itself, not only its engine, was stopped at its memory limit.
        raise ToolError(f"the search stopped: {engine_stopped('SIGKILL', True, memory_limit)}", "limit_exceeded")
    if result.outcome == "timeout":
        limit = f" ({timeout_s:g} s)" if timeout_s is not None else ""
        raise ToolError(f"timed out: the call ran past the policy's timeout_s{limit} and was stopped", "timeout")
    if result.failure is not None and result.failure.code == "engine_killed":
        # The engine, not the worker, broke a limit or the seccomp allowlist.
        outcome: Outcome = "sandbox_violation" if result.failure.message == "SIGSYS" else "worker_crashed"
        raise ToolError(WORKER_FAILED, outcome)
    if result.outcome == "failed" and result.failure is not None and result.failure.code != "bad_request":
        # The audit keeps the engine's message whole (worker_end above); the client gets it path-free.
        raise ToolError(f"the search engine reported an error: {client_text(result.failure.message)}", "internal_error")
    if result.signal == "SIGSYS":
        raise ToolError(WORKER_FAILED, "sandbox_violation")
    raise ToolError(WORKER_FAILED, "worker_crashed")  # incl. garbage frames: the detail says which


def engine_stopped(cause: str, oom_killed: bool, memory_limit: int | None) -> str:
    """Why the search of one file stopped, naming the limit that stopped it when one did.
    `cause` is a signal or an errno name (checked by the protocol). The worker's cgroup
    counts its memory limit's kills; a read refused with ENOMEM is that limit too (the
    kernel refuses a page-cache charge rather than kill); without cgroups a SIGKILL can
    only be the CPU-time limit's hard end."""
    if oom_killed or cause == "ENOMEM":
        size = f" of {memory_limit >> 20} MiB" if memory_limit and memory_limit < 1 << 50 else ""
        return (
            f"the search reached the worker's memory limit{size} (the sandbox profile's [cgroup] memory_bytes): "
            "a line too long to hold, as in a sparse or binary file"
        )
    if cause in ("SIGXCPU", "SIGKILL"):
        return f"the search engine was stopped by a sandbox limit ({cause}: CPU time or memory)"
    if cause == "EAGAIN":
        return "the search engine could not be started (a process limit was reached)"
    if cause.startswith("E"):
        return f"reading it failed ({cause})"
    return f"the search engine died of {cause}"
