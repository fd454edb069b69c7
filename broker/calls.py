"""The broker's request path, independent of the MCP transport.

audit "begin" (durable) -> validate -> open the file -> bounded concurrency
-> one worker (a search over more than 32 files: one per batch of 32, one after
the other, see broker/tools/query_logs/batches.py) -> shape the result -> audit "end". Any exception that is not a
ToolError is reported to the client as a generic internal error; its details
go to the audit log only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import mcp_types as types

from bastion_wire.protocol import IntelRequest, SearchRequest, TailRequest
from broker.audit.log import AuditError, AuditLog
from broker.call_record import CallRecord, Coverage, SearchEnd, preview
from broker.errors import ToolError, UnknownName
from broker.files.allowlist import Allowlist, OpenedLog, SearchTarget
from broker.files.regular_file import open_regular
from broker.policy import Intel, Policy, RateLimit
from broker.pool.outcome import WORKER_FAILED, engine_stopped, fate, raise_for, worker_end
from broker.pool.ready_workers import WorkerPool
from broker.pool.worker_process import SandboxUnavailable, Worker, WorkerResult
from broker.ratelimit import Rate, RateLimiter
from broker.sandbox import cgroup
from broker.tools import prompts
from broker.tools.check_ip_reputation import tool as intel_tool
from broker.tools.check_ip_reputation.address import parse_networks
from broker.tools.query_logs import engine as search_engine
from broker.tools.query_logs import notes as search_notes
from broker.tools.query_logs import tool as query_logs
from broker.tools.query_logs.batches import Progress, absorb, batch_request

log = logging.getLogger("bastion.service")
STOP_DELAY_S = 0.02  # the SDK sends a reply in ~4 ms on a 2-core host; the worker waits idle meanwhile
T = TypeVar("T")

SANDBOX_DOWN = "refused: the worker sandbox cannot be set up on this host"
BUSY = "busy: every worker slot is taken and the queue is full; retry shortly"
MAX_NOTES = 10  # worker notes (truncated gzip, decompression cap) passed on to the client
AUDIT_SKIPPED = 50  # skipped files the end record names (with why)
AUDIT_DOWN = "refused: the audit log cannot be written, so no call can run"
INTERNAL = "internal error; the details were recorded in the audit log"


def rate_limiter(rules: RateLimit) -> RateLimiter:
    return RateLimiter(
        per_client=Rate(rules.calls, rules.window_s),
        global_rate=Rate(rules.global_calls, rules.global_window_s),
        per_tool={tool: Rate(rule.calls, rule.window_s) for tool, rule in rules.tools.items()},
    )


def log_uri(path: str) -> str:
    return "file://" + urllib.parse.quote(path)


def uri_path(uri: str) -> object:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise ToolError("uri must be a file:// URI from resources/list")
    try:
        return urllib.parse.unquote(parts.path, errors="strict")
    except UnicodeDecodeError:  # %ff, an overlong or surrogate sequence: no path could have that name
        raise ToolError(
            "uri must be a file:// URI from resources/list: its percent-escapes must encode UTF-8"
        ) from None


def _shown(exc: BaseException) -> ToolError | None:
    """What the client gets instead of `exc`; None: `exc` itself (a ToolError, an unknown
    name, a cancellation)."""
    if isinstance(exc, SandboxUnavailable):
        return ToolError(SANDBOX_DOWN, "internal_error")
    if isinstance(exc, Exception) and not isinstance(exc, (ToolError, UnknownName)):
        return ToolError(INTERNAL, "internal_error")  # the client must never see internals
    return None


class Bastion:
    def __init__(
        self, policy: Policy, pool: WorkerPool, audit: AuditLog, client: str, allowlist: Allowlist | None = None
    ) -> None:
        self.policy = policy
        # `bastion serve` pins the allowlist before anything else starts (a refusal is a policy error).
        self.allowlist = allowlist if allowlist is not None else Allowlist(policy)
        self.pool = pool
        self.audit = audit
        self.client = client  # the default identity (stdio: the OS user)
        self.limiter = rate_limiter(policy.rate_limit)
        # Validated by load_policy; parsed once here rather than on every lookup.
        self.intel_refused = parse_networks(policy.intel.refuse, "intel.refuse") if policy.intel is not None else []
        self.ripgrep = pool.has_ripgrep()
        self._slots = anyio.Semaphore(policy.limits.max_workers)
        self._queued = 0

    # --- the audited envelope of every call ------------------------------------

    async def _audited(self, tool: str, arguments: Any, client: str, work: Callable[[CallRecord], Awaitable[T]]) -> T:
        """begin -> rate limit -> work -> end (durable). Raises ToolError for the client."""
        started = time.monotonic()
        try:
            # Not synced on its own: the end record's fdatasync covers it, before any result leaves.
            call_id = self.audit.write("begin", sync=False, client=client, tool=tool, arguments=arguments)
        except AuditError as exc:
            log.error("%s", exc)
            raise ToolError(AUDIT_DOWN, "internal_error") from None  # never written: the audit failed
        record = CallRecord()
        try:
            self._admit(client, tool)
            reply = await work(record)
        except BaseException as exc:
            record.ended_by(exc)
            shown = _shown(exc)
            if shown is None:
                raise
            raise shown from None
        finally:
            # Runs on cancellation too, so every begin has its end. If the end
            # cannot be written the result is withheld (fail closed).
            ended = self._end(call_id, client, tool, arguments, started, record)
            if record.stop_after_reply is not None:  # after the end record: its worker_exit record follows it
                worker, result = record.stop_after_reply
                self.pool.after_call(functools.partial(self._stop, worker, result, call_id, client, tool))
        if not ended:
            raise ToolError(AUDIT_DOWN, "internal_error")
        return reply

    async def refuse(self, tool: str, arguments: Any, client: str | None, message: str) -> None:
        """Record a call refused before its handler ran (malformed, too deep): begin, then end
        with outcome invalid, as any refused call."""

        async def work(record: CallRecord) -> None:
            raise ToolError(message)

        with contextlib.suppress(ToolError):
            await self._audited(tool, arguments, client or self.client, work)

    def reject(self, method: str | None, client: str | None, message: str) -> None:
        """Record a message refused before the SDK saw it that names no call (one record)."""
        try:
            # Not synced on its own (no result waits on it): the next synced record covers it.
            self.audit.write("rejected", sync=False, client=client or self.client, method=method, error=message)
        except AuditError as exc:
            log.error("%s", exc)

    def _admit(self, client: str, tool: str) -> None:
        decision = self.limiter.check(client, tool)
        if not decision.allowed:
            wait = decision.retry_after_s
            who = "for this client" if decision.scope == "client" else "for the server"
            raise ToolError(f"rate limited {who}: retry after {wait:g} s (retry_after_s={wait:g})", "denied_rate")

    def _end(self, call_id: int, client: str, tool: str, arguments: Any, started: float, record: CallRecord) -> bool:
        fields = record.audit_fields(duration_ms=round((time.monotonic() - started) * 1000, 2))
        try:
            self.audit.write("end", call=call_id, client=client, tool=tool, arguments=arguments, **fields)
        except AuditError as exc:
            log.error("%s", exc)
            return False
        return True

    # --- tools ---------------------------------------------------------------

    def tools(self) -> list[types.Tool]:
        tools = [query_logs.tool(self.policy.limits)]
        return tools + [intel_tool.tool()] if self.policy.intel is not None else tools

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None, client: str | None = None
    ) -> types.CallToolResult:
        handlers = {query_logs.NAME: self._query_logs}
        if self.policy.intel is not None:
            handlers[intel_tool.NAME] = self._check_ip_reputation

        async def work(record: CallRecord) -> types.CallToolResult:
            if name not in handlers:
                raise UnknownName(f"unknown tool: {name[:64]!r}")
            return await handlers[name](arguments, record)

        try:
            return await self._audited(name, arguments or {}, client or self.client, work)
        except ToolError as exc:
            return _error(exc.message)

    async def _query_logs(self, arguments: object, record: CallRecord) -> types.CallToolResult:
        limits = self.policy.limits
        args = query_logs.parse(arguments, limits)
        target = self.allowlist.open_search(args.log_path, newest_first=args.newest_first)
        try:
            base = SearchRequest(
                pattern=args.pattern,
                max_lines=args.max_lines,
                max_line_bytes=limits.max_line_bytes,
                files=[],
                ignore_case=args.ignore_case,
                context=args.context,
                count_only=args.count_only,
                newest_first=args.newest_first,
                since=args.since,
                until=args.until,
                max_decompressed_bytes=limits.max_decompressed_bytes,
            )
            async with self._slot(limits.max_queue):  # one slot for every batch of the call
                progress = await self._search(target, base, args.pattern_tree, record)
        finally:
            target.close()
        return self._search_reply(target, base, progress, record)

    async def _search(self, target: SearchTarget, base: SearchRequest, tree: Any, record: CallRecord) -> Progress:
        """Every batch of the target, one worker each, until done or a call-wide limit is spent."""
        limits = self.policy.limits
        deadline = time.monotonic() + limits.timeout_s  # for the whole call, not per batch
        progress = Progress()
        record.bytes_scanned = 0
        while True:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                progress.timed_out = [log.path for log in target.files] + list(target.pending)
                break
            request = batch_request(base, target.files, progress)
            size = sum(os.fstat(log.fd).st_size for log in target.files)
            request = search_engine.choose(request, tree, self.policy.search.engine, self.ripgrep, size)
            record.engine = request.engine
            last = not target.pending
            result, worker = await self._run_worker(
                "grep",
                request,
                [log.fd for log in target.files],
                record,
                left_s,
                limits.max_output_bytes - progress.bytes_received,
            )
            progress.workers += 1
            progress.bytes_received += result.bytes_received
            record.bytes_scanned += sum(os.lseek(log.fd, 0, os.SEEK_CUR) for log in target.files)
            if result.outcome == "timeout" and progress.paths:  # earlier batches answered: keep them
                progress.timed_out = [log.path for log in target.files] + list(target.pending)
                break
            raise_for(result, limits.timeout_s, self._memory_limit_if_crashed(result))
            failed = self._engine_deaths(result, worker, target.files)
            notes = [
                search_notes.worker_note(target.log_path, note, [log.path for log in target.files])
                for note in result.notes[:MAX_NOTES]
            ]
            absorb(progress, target.files, result, failed, notes)
            # A worker's last frames can arrive with its Done, past its byte budget: spent is spent.
            progress.capped = progress.capped or progress.bytes_received >= limits.max_output_bytes
            target.close()
            if progress.stopped(base) or last:
                break
            await self._stop_now(worker, result, progress, record)
            self.allowlist.open_next(target)
            if not target.files:
                break
        return progress

    def _memory_limit_if_crashed(self, result: WorkerResult) -> int | None:
        """The grep workers' memory cap, asked for only when a crash may have been that limit."""
        crashed = result.outcome == "worker_crashed" and result.peak_memory_kb is not None
        return self.pool.memory_limit("grep") if crashed else None

    def _engine_deaths(self, result: WorkerResult, worker: Worker, files: list[OpenedLog]) -> dict[int, str]:
        """The batch's files whose engine died, with the limit that killed it if one did.
        Asked while the worker still lives: its cgroup counts the memory limit's kills."""
        if not result.skipped:
            return {}
        oom = bool(cgroup.oom_kills(worker.cgroup_dirs))  # the OOM killer's signal is SIGKILL
        limit = cgroup.memory_limit(worker.cgroup_dirs)
        return {
            skip.file: engine_stopped(skip.cause, oom and skip.cause == "SIGKILL", limit)
            for skip in result.skipped[: len(files)]
            if skip.file < len(files)
        }

    async def _stop_now(self, worker: Worker, result: WorkerResult, progress: Progress, record: CallRecord) -> None:
        """A batch that is not the last: its worker is stopped at once (a call may need
        hundreds; none may linger), its rusage summed into the end record."""
        if record.stop_after_reply is not None and record.stop_after_reply[0] is worker:
            record.stop_after_reply = None
        if record.worker is not None and record.worker.follows:  # it is stopped here, not after the reply
            record.worker = dataclasses.replace(record.worker, follows=False)
        await worker.finish(result)
        progress.earlier_cpu_s += result.cpu_s

    def _search_reply(
        self, target: SearchTarget, request: SearchRequest, progress: Progress, record: CallRecord
    ) -> types.CallToolResult:
        limits = self.policy.limits
        if progress.failed and len(progress.failed) == len(progress.paths) and not progress.lines:
            failed = progress.failed[0]
            raise ToolError(
                f"the search stopped: {search_notes.shown(target.log_path, failed.path)}: {failed.reason}",
                "limit_exceeded",
            )
        lines, cut = query_logs.cap_lines(progress.lines, limits.max_output_bytes)
        reason = search_notes.truncation(progress, cut, target, request)
        notes = progress.notes[:MAX_NOTES] + search_notes.coverage(target, progress, request, self.policy.limits)
        record.reply = "ok" if reason != "max_output_bytes" else "output_capped"
        record.search = SearchEnd(
            files=len(progress.paths),
            workers=progress.workers,
            lines=len(lines),
            truncated_reason=reason,
            bytes=progress.bytes_received,
        )
        record.result_preview = preview("\n".join(line.text for line in lines))
        if progress.workers > 1:
            record.earlier_workers_cpu_s = round(progress.earlier_cpu_s, 4)
        if target.skipped or progress.failed or target.left_out or progress.timed_out:
            not_searched = target.skipped + progress.failed
            record.coverage = Coverage(
                files_skipped=len(not_searched),
                files_left_out=len(target.left_out),
                files_timed_out=len(progress.timed_out),
                skipped=[f"{file.path}: {file.reason}" for file in not_searched[:AUDIT_SKIPPED]],
            )
        counts = progress.counts if request.count_only else None
        return query_logs.result(target.log_path, progress.paths, progress.compressed, lines, counts, reason, notes)

    async def _run(self, kind: str, request: Any, fd: int | list[int], record: CallRecord) -> WorkerResult:
        limits = self.policy.limits
        async with self._slot(limits.max_queue):
            result, _ = await self._run_worker(kind, request, fd, record, limits.timeout_s, limits.max_output_bytes)
        return result

    async def _run_worker(
        self, kind: str, request: Any, fd: int | list[int], record: CallRecord, deadline_s: float, max_bytes: int
    ) -> tuple[WorkerResult, Worker]:
        """One worker, in a slot the caller holds. A worker that replied is left to be
        stopped once the reply is out (record.stop_after_reply); any other is reaped already."""
        result = WorkerResult()
        async with self.pool.worker(kind) as worker:
            try:
                await worker.call(request, fd, deadline_s, max_bytes, result, stop_later=True)
                if not result.reaped:
                    record.stop_after_reply = (worker, result)
            finally:
                record.worker = worker_end(worker.pid, result)  # also when cancelled: how the worker ended
        return result, worker

    async def _stop(self, worker: Worker, result: WorkerResult, call_id: int, client: str, tool: str) -> None:
        """Stop a worker that sent its final reply, once the reply is out; record how it ended."""
        await anyio.sleep(STOP_DELAY_S)
        await worker.finish(result)
        try:
            self.audit.write(
                "worker_exit",
                sync=False,
                call=call_id,
                client=client,
                tool=tool,
                worker_pid=worker.pid,
                **fate(result).audit_fields(),
            )
        except AuditError as exc:
            log.error("%s", exc)

    async def _check_ip_reputation(self, arguments: object, record: CallRecord) -> types.CallToolResult:
        intel = self.policy.intel
        assert intel is not None  # the tool is only offered when [intel] is configured
        args = intel_tool.parse(arguments, self.intel_refused)
        record.address = args.address.canonical
        fds, enrich, notes = _open_intel(intel)
        request = IntelRequest(
            packed=intel_tool.packed(args.address),
            include_history=args.include_history,
            max_matches=intel_tool.MAX_MATCHES,
            enrich=enrich,
        )
        try:
            result = await self._run("intel", request, fds, record)
        finally:
            for fd in fds:
                os.close(fd)
        if result.failure is not None and result.failure.code == "bad_database":
            raise ToolError(
                "the threat-intel database is damaged; an operator must recompile it (bastion intel compile)",
                "internal_error",
            )
        raise_for(result)
        if result.intel is None:
            raise ToolError(WORKER_FAILED, "worker_crashed")
        reply = intel_tool.result(args, result.intel, intel, notes)
        assert reply.structured_content is not None
        record.reply = "ok"
        record.verdict = reply.structured_content["verdict"]
        record.matches = len(reply.structured_content["matches"])
        record.result_preview = preview(
            reply.content[0].text if isinstance(reply.content[0], types.TextContent) else ""
        )
        return reply

    @asynccontextmanager
    async def _slot(self, max_queue: int) -> AsyncIterator[None]:
        """One of max_workers slots; wait in a bounded queue, else refuse as busy."""
        if self._slots.value == 0 and self._queued >= max_queue:
            raise ToolError(BUSY, "busy")
        self._queued += 1
        try:
            await self._slots.acquire()
        finally:
            self._queued -= 1
        try:
            yield
        finally:
            self._slots.release()

    # --- prompts -------------------------------------------------------------

    def prompts(self) -> list[types.Prompt]:
        return prompts.listing()

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None, client: str | None = None
    ) -> types.GetPromptResult:
        """A rendered prompt. Raises ToolError (bad arguments) or UnknownName."""

        async def work(record: CallRecord) -> types.GetPromptResult:
            description, args = prompts.parse(name, arguments)
            intel = self.policy.intel is not None
            if name == "analyze_incident":
                text = prompts.analyze_incident(prompts.check_incident_id(args["incident_id"]), intel)
            else:
                since = prompts.check_since(args["since"]) if "since" in args else None
                text = prompts.triage_auth_failures(self._auth_log(args.get("log_path")), since, intel)
            record.reply = "ok"
            return types.GetPromptResult(description=description, messages=prompts.message(text))

        return await self._audited(
            "prompts/get", {"name": name, "arguments": arguments or {}}, client or self.client, work
        )

    def _auth_log(self, value: object) -> str:
        if value is not None:
            path, fd = self.allowlist.open(value)
            os.close(fd)
            return path
        logs = [entry.path for entry in self.allowlist.logs()]
        auth = [path for path in logs if os.path.basename(path).startswith("auth")]
        if not logs:
            raise ToolError("no allowlisted log exists right now")
        return (auth or logs)[0]

    # --- resources -----------------------------------------------------------

    def resources(self) -> list[types.Resource]:
        return [
            types.Resource(
                uri=log_uri(entry.path),
                name=os.path.basename(entry.path),
                title=entry.path,
                description=entry.description
                or f"Allowlisted log {entry.path} (last {self.policy.limits.resource_bytes} bytes)",
                mime_type="text/plain",
            )
            for entry in self.allowlist.logs()
        ]

    async def read_resource(self, uri: str, client: str | None = None) -> str:
        """The sanitized tail of an allowlisted log. Raises ToolError for the client."""

        async def work(record: CallRecord) -> str:
            text = await self._tail(uri, record)
            record.reply = "ok"
            record.result_preview = preview(text)
            return text

        return await self._audited("resources/read", {"uri": uri}, client or self.client, work)

    async def _tail(self, uri: str, record: CallRecord) -> str:
        if not isinstance(uri, str) or len(uri) > 8192:
            raise ToolError("uri must be a file:// URI from resources/list")
        _, fd = self.allowlist.open(uri_path(uri), name="uri")
        limits = self.policy.limits
        try:
            result = await self._run(
                "resource",
                TailRequest(max_bytes=limits.resource_bytes, max_line_bytes=limits.max_line_bytes),
                fd,
                record,
            )
        finally:
            os.close(fd)
        raise_for(result)
        return "".join(result.text)


def _open_intel(intel: Intel) -> tuple[list[int], list[str], list[str]]:
    """Descriptors for an intel worker: the compiled database, then the enrichment databases
    that exist. A missing database is the operator's to fix; the client gets a clean error.
    The compiled database is written by `bastion intel compile` itself (a rename, never a
    link), so a symlink there was planted: refused. The .mmdb files are the operator's."""
    try:
        fds = [open_regular(intel.database, follow_symlinks=False)]
    except OSError as exc:
        log.error("cannot open the intel database %s: %s", intel.database, exc.strerror)
        raise ToolError(
            "threat intelligence is not available: the feed database has not been compiled "
            "(an operator must run `bastion intel compile`)",
            "internal_error",
        ) from None
    enrich, notes = [], []
    for kind, path in (("asn", intel.asn_mmdb), ("country", intel.country_mmdb)):
        if not path:
            continue
        try:
            fds.append(open_regular(path))
            enrich.append(kind)
        except OSError as exc:
            log.warning("cannot open the %s database %s: %s", kind, path, exc.strerror)
            notes.append(f"{kind} enrichment unavailable (its database cannot be opened)")
    return fds, enrich, notes


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
