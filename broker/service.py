"""The broker's request path, independent of the MCP transport.

audit "begin" (durable) -> validate -> open the file -> bounded concurrency
-> one worker -> shape the result -> audit "end". Any exception that is not a
ToolError is reported to the client as a generic internal error; its details
go to the audit log only.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import urllib.parse
from typing import Any

import anyio
import mcp_types as types

from broker import query_logs
from broker.allowlist import Allowlist
from broker.audit import AuditError, AuditLog
from broker.dispatch import SandboxUnavailable, WorkerPool, WorkerResult
from broker.errors import ToolError, UnknownName
from broker.policy import Policy
from workers.protocol import SearchRequest, TailRequest

log = logging.getLogger("bastion.service")

WORKER_FAILED = "the worker running this call failed; the incident was recorded in the audit log"
AUDIT_DOWN = "refused: the audit log cannot be written, so no call can run"
INTERNAL = "internal error; the details were recorded in the audit log"


def log_uri(path: str) -> str:
    return "file://" + urllib.parse.quote(path)


def uri_path(uri: str) -> object:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise ToolError("uri must be a file:// URI from resources/list")
    return urllib.parse.unquote(parts.path, errors="strict")


class Bastion:
    def __init__(self, policy: Policy, pool: WorkerPool, audit: AuditLog, client: str) -> None:
        self.policy = policy
        self.allowlist = Allowlist(policy)
        self.pool = pool
        self.audit = audit
        self.client = client
        self._slots = anyio.Semaphore(policy.limits.max_workers)

    # --- tools ---------------------------------------------------------------

    def tools(self) -> list[types.Tool]:
        return [query_logs.tool(self.policy.limits)]

    async def call_tool(self, name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
        started = time.monotonic()
        try:
            call_id = self.audit.write("begin", client=self.client, tool=name, arguments=arguments or {})
        except AuditError as exc:
            log.error("%s", exc)
            return _error(AUDIT_DOWN)
        end: dict[str, Any] = {"outcome": "internal_error"}
        handlers = {query_logs.NAME: self._query_logs}
        try:
            if name not in handlers:
                end.update(outcome="invalid", error="unknown tool")
                raise UnknownName(f"unknown tool: {name[:64]!r}")
            reply = await handlers[name](arguments, end)
        except UnknownName:
            raise  # a protocol error (JSON-RPC invalid params), not a tool result
        except ToolError as exc:
            end.update(outcome=exc.outcome, error=exc.message)
            reply = _error(exc.message)
        except SandboxUnavailable as exc:
            end.update(outcome="sandbox_unavailable", error=str(exc))
            reply = _error("refused: the worker sandbox cannot be set up on this host")
        except Exception as exc:  # noqa: BLE001 - the client must never see internals
            end.update(outcome="internal_error", error=repr(exc), trace=traceback.format_exc(limit=8))
            reply = _error(INTERNAL)
        finally:
            # Runs on cancellation too, so every begin has its end.
            self._end(call_id, name, started, end)
        return reply

    async def _query_logs(self, arguments: object, end: dict[str, Any]) -> types.CallToolResult:
        args = query_logs.parse(arguments, self.policy.limits)
        path, fd = self.allowlist.open(args.log_path)
        limits = self.policy.limits
        request = SearchRequest(pattern=args.pattern, max_lines=args.max_lines, max_line_bytes=limits.max_line_bytes)
        try:
            result = await self._run("grep", request, fd, end)
            end["bytes_scanned"] = os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)
        _raise_for(result)
        lines, cut = query_logs.cap_lines(result.lines, limits.max_output_bytes)
        reason = "max_output_bytes" if result.outcome == "output_capped" or cut else ("max_lines" if result.more else None)
        end.update(outcome="ok" if reason != "max_output_bytes" else "output_capped", lines=len(lines), truncated_reason=reason)
        return query_logs.result(path, lines, reason)

    async def _run(self, kind: str, request: Any, fd: int, end: dict[str, Any]) -> WorkerResult:
        limits = self.policy.limits
        async with self._slots:
            worker = await self.pool.acquire(kind)
            end["worker_pid"] = worker.pid
            result = await worker.call(request, fd, limits.timeout_s, limits.max_output_bytes)
        end.update(
            outcome=result.outcome,
            bytes=result.bytes_received,
            exit_code=result.exit_code,
            signal=result.signal,
            cpu_s=result.cpu_s,
            max_rss_kb=result.max_rss_kb,
        )
        if result.detail:
            end["detail"] = result.detail
        if result.failure is not None:
            end["error"] = f"{result.failure.code}: {result.failure.message}"
            if result.failure.code == "engine_killed":
                end["signal"] = result.failure.message  # the engine's death, reported by the worker
        return result

    def _end(self, call_id: int, name: str, started: float, end: dict[str, Any]) -> None:
        end["duration_ms"] = round((time.monotonic() - started) * 1000, 2)
        try:
            self.audit.write("end", call=call_id, client=self.client, tool=name, **end)
        except AuditError as exc:
            log.error("%s", exc)

    # --- resources -----------------------------------------------------------

    def resources(self) -> list[types.Resource]:
        return [
            types.Resource(
                uri=log_uri(entry.path),
                name=os.path.basename(entry.path),
                title=entry.path,
                description=entry.description or f"Allowlisted log {entry.path} (last {self.policy.limits.resource_bytes} bytes)",
                mime_type="text/plain",
            )
            for entry in self.allowlist.logs()
        ]

    async def read_resource(self, uri: str) -> str:
        """The sanitized tail of an allowlisted log. Raises ToolError for the client."""
        started = time.monotonic()
        try:
            call_id = self.audit.write("begin", client=self.client, tool="resources/read", arguments={"uri": uri})
        except AuditError as exc:
            log.error("%s", exc)
            raise ToolError(AUDIT_DOWN, "audit_failed") from None
        end: dict[str, Any] = {"outcome": "internal_error"}
        try:
            text = await self._tail(uri, end)
            end["outcome"] = "ok"
            return text
        except ToolError as exc:
            end.update(outcome=exc.outcome, error=exc.message)
            raise
        except Exception as exc:  # noqa: BLE001
            end.update(error=repr(exc), trace=traceback.format_exc(limit=8))
            raise ToolError(INTERNAL, "internal_error") from None
        finally:
            self._end(call_id, "resources/read", started, end)

    async def _tail(self, uri: str, end: dict[str, Any]) -> str:
        if not isinstance(uri, str) or len(uri) > 8192:
            raise ToolError("uri must be a file:// URI from resources/list")
        _, fd = self.allowlist.open(uri_path(uri), name="uri")
        limits = self.policy.limits
        try:
            result = await self._run("resource", TailRequest(max_bytes=limits.resource_bytes, max_line_bytes=limits.max_line_bytes), fd, end)
        finally:
            os.close(fd)
        _raise_for(result)
        return "".join(result.text)


def _raise_for(result: WorkerResult) -> None:
    if result.outcome in ("ok", "output_capped"):
        return
    if result.outcome == "timeout":
        raise ToolError("timed out: the call ran past the policy's timeout_s and was stopped", "timeout")
    if result.failure is not None and result.failure.code == "engine_killed":
        # The engine, not the worker, broke a limit or the seccomp allowlist.
        outcome = "sandbox_violation" if result.failure.message == "SIGSYS" else "worker_crashed"
        raise ToolError(WORKER_FAILED, outcome)
    if result.outcome == "failed" and result.failure is not None and result.failure.code != "bad_request":
        raise ToolError(f"the search engine reported an error: {result.failure.message[:200]}", "failed")
    if result.signal == "SIGSYS":
        raise ToolError(WORKER_FAILED, "sandbox_violation")
    raise ToolError(WORKER_FAILED, "protocol_error" if result.outcome == "protocol_error" else "worker_crashed")


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
