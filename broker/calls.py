"""The audited envelope of every call, independent of the MCP transport.

audit "begin" -> rate limit -> the call's work -> audit "end", and the result
leaves only once the end record (and so the begin) is on disk: a group commit
(broker/audit/group_commit.py) syncs in a thread, one sync for many calls. The work is a tool's row
(broker/tools/registry.py), a resource read or a prompt, each in its own module
under broker/tools/; this module only gives them a slot in the bounded queue
and runs their workers, writing each worker's end to the call's record
(broker/call_record.py). Any exception that is not a ToolError is reported to
the client as a generic internal error; its details go to the audit log only.
Each call captures the current PolicyGeneration (broker/policy_generation.py) once
and runs on it to its end, whatever a reload swaps in meanwhile, and sees it as its
client's scope shows it (broker/scopes.py): a ClientView.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import mcp_types as types
import msgspec

from broker import scopes
from broker.audit.group_commit import GroupCommit
from broker.audit.log import AuditError, AuditLog
from broker.call_record import CallRecord, preview
from broker.errors import ToolError, UnknownName
from broker.files.allowlist import Allowlist
from broker.policy import Policy
from broker.policy_generation import PolicyGeneration
from broker.pool.outcome import fate, worker_end
from broker.pool.ready_workers import WorkerPool
from broker.pool.worker_process import OnProgress, SandboxUnavailable, Worker, WorkerResult
from broker.ratelimit import RateLimiter
from broker.scopes import Scope
from broker.tools import completions, prompts, registry, resources
from broker.tools.context import CallContext, ProgressSink

log = logging.getLogger("bastion.service")
STOP_DELAY_S = 0.02  # the SDK sends a reply in ~4 ms on a 2-core host; the worker waits idle meanwhile
T = TypeVar("T")

SANDBOX_DOWN = "refused: the worker sandbox cannot be set up on this host"
BUSY = "busy: every worker slot is taken and the queue is full; retry shortly"
AUDIT_DOWN = "refused: the audit log cannot be written, so no call can run"
INTERNAL = "internal error; the details were recorded in the audit log"


def _shown(exc: BaseException) -> ToolError | None:
    """What the client gets instead of `exc`; None: `exc` itself (a ToolError, an unknown
    name, a cancellation)."""
    if isinstance(exc, SandboxUnavailable):
        return ToolError(SANDBOX_DOWN, "internal_error")
    if isinstance(exc, Exception) and not isinstance(exc, (ToolError, UnknownName)):
        return ToolError(INTERNAL, "internal_error")  # the client must never see internals
    return None


@dataclass(frozen=True)
class ClientView:
    """A generation as one client's scope shows it: only its logs, tools and limits."""

    generation: PolicyGeneration
    scope: Scope
    policy: Policy
    allowlist: Allowlist


def _usable(row: registry.Tool[Any], view: ClientView) -> bool:
    """A tool the client's scope grants, and that its view of the policy offers (a scope
    granting no journal source has no query_journal)."""
    return view.scope.allows_tool(row.name) and row.offered(view.policy)


def client_view(generation: PolicyGeneration, client: str | None) -> ClientView:
    """`client`: an HTTP client's name, or None for the stdio user. Built per request, never cached."""
    scope = scopes.of(generation.policy, client)
    return ClientView(generation, scope, scope.policy(generation.policy), scope.allowlist(generation.allowlist))


class Bastion:
    def __init__(
        self, policy: Policy, pool: WorkerPool, audit: AuditLog, client: str, allowlist: Allowlist | None = None
    ) -> None:
        # `bastion serve` pins the allowlist before anything else starts (a refusal is a policy error).
        self.generation = PolicyGeneration(policy, allowlist if allowlist is not None else Allowlist(policy))
        self.pool = pool
        self.audit = audit
        self.commit = GroupCommit(audit)
        self.client = client  # the default identity (stdio: the OS user)
        self.ripgrep = pool.has_ripgrep()
        self._slots = anyio.Semaphore(policy.limits.max_workers)  # fixed: a reload may not change it
        self._queued = 0
        self._on_swap: list[Callable[[], Awaitable[None]]] = []

    # --- the current generation (broker/policy_generation.py) ------------------

    @property
    def policy(self) -> Policy:
        return self.generation.policy

    @property
    def allowlist(self) -> Allowlist:
        return self.generation.allowlist

    @property
    def limiter(self) -> RateLimiter:
        return self.generation.limiter

    def on_swap(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Run `listener` after every swap (the HTTP transport closes revoked clients' sessions)."""
        self._on_swap.append(listener)

    async def swap(self, generation: PolicyGeneration) -> None:
        """New calls use `generation` from now on; calls in flight finish on theirs."""
        old, self.generation = self.generation, generation
        old.retire()
        for listener in self._on_swap:
            try:
                await listener()
            except Exception:  # noqa: BLE001 - the swap is done; a listener must not undo it
                log.exception("after a policy reload")

    # --- the audited envelope of every call ------------------------------------

    async def _audited(
        self, tool: str, arguments: Any, client: str | None, work: Callable[[CallRecord, ClientView], Awaitable[T]]
    ) -> T:
        """begin -> rate limit -> work -> end (durable). Raises ToolError for the client.
        The call runs on the generation current now, to its end, whatever a reload swaps in."""
        with self.generation.in_use() as generation:
            return await self._audited_on(client_view(generation, client), tool, arguments, client or self.client, work)

    async def _audited_on(
        self,
        view: ClientView,
        tool: str,
        arguments: Any,
        client: str,
        work: Callable[[CallRecord, ClientView], Awaitable[T]],
    ) -> T:
        started = time.monotonic()
        scoped = view.scope.audit_fields()
        try:
            # Not synced on its own: the end record's sync covers it, before any result leaves.
            call_id = self.audit.write("begin", sync=False, client=client, tool=tool, arguments=arguments, **scoped)
        except AuditError as exc:
            log.error("%s", exc)
            raise ToolError(AUDIT_DOWN, "internal_error") from None  # never written: the audit failed
        record = CallRecord()
        try:
            _admit(view.generation.limiter, client, tool, view.scope)
            reply = await work(record, view)
        except BaseException as exc:
            # Also on cancellation, so every begin has its end (nothing is released then: no sync).
            record.ended_by(exc)
            end_seq = self._end(call_id, client, tool, arguments, started, record, scoped)
            if isinstance(exc, Exception):  # not a cancellation: an error, too, leaves only once durable
                await self._released(end_seq)
            shown = _shown(exc)
            if shown is None:
                raise
            raise shown from None
        end_seq = self._end(call_id, client, tool, arguments, started, record, scoped)
        await self._released(end_seq)
        return reply

    async def _released(self, end_seq: int | None) -> None:
        """Wait until the end record is on disk; if it is not (fail closed), withhold the result."""
        if end_seq is not None:
            try:
                await self.commit.durable(end_seq)
                return
            except AuditError as exc:
                log.error("%s", exc)
        raise ToolError(AUDIT_DOWN, "internal_error")

    async def refuse(self, tool: str, arguments: Any, client: str | None, message: str) -> None:
        """Record a call refused before its handler ran (malformed, too deep): begin, then end
        with outcome invalid, as any refused call."""

        async def work(record: CallRecord, view: ClientView) -> None:
            raise ToolError(message)

        with contextlib.suppress(ToolError):
            await self._audited(tool, arguments, client, work)

    def reject(self, method: str | None, client: str | None, message: str) -> None:
        """Record a message refused before the SDK saw it that names no call (one record)."""
        try:
            # Not synced on its own (no result waits on it): the next synced record covers it.
            self.audit.write("rejected", sync=False, client=client or self.client, method=method, error=message)
        except AuditError as exc:
            log.error("%s", exc)

    def session_event(self, action: str, client: str, sid_sha256: str, **fields: Any) -> None:
        """Record an HTTP session opened, closed, expired or evicted (one record, as reject)."""
        try:
            self.audit.write("session", sync=False, client=client, action=action, sid_sha256=sid_sha256, **fields)
        except AuditError as exc:
            log.error("%s", exc)

    def _end(
        self,
        call_id: int,
        client: str,
        tool: str,
        arguments: Any,
        started: float,
        record: CallRecord,
        scoped: dict[str, Any],
    ) -> int | None:
        """Write the end record (not yet synced) and schedule the worker's stop; None if it failed."""
        fields = record.audit_fields(duration_ms=round((time.monotonic() - started) * 1000, 2))
        try:
            seq: int | None = self.audit.write(
                "end", sync=False, call=call_id, client=client, tool=tool, arguments=arguments, **scoped, **fields
            )
        except AuditError as exc:
            log.error("%s", exc)
            seq = None
        if record.stop_after_reply is not None:  # after the end record: its worker_exit record follows it
            worker, result = record.stop_after_reply
            self.pool.after_call(functools.partial(self._stop, worker, result, call_id, client, tool))
        return seq

    # --- what a client may call: only what its scope allows (broker/scopes.py) ------

    def tools(self, client: str | None = None) -> list[types.Tool]:
        view = client_view(self.generation, client)
        return [row.schema(view.policy) for row in view.generation.tools.values() if _usable(row, view)]

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        client: str | None = None,
        progress: ProgressSink | None = None,
    ) -> types.CallToolResult:
        """`progress`: where the tool reports how far it has got, if the client asked."""

        async def work(record: CallRecord, view: ClientView) -> types.CallToolResult:
            row = view.generation.tools.get(name)
            if row is None or not _usable(row, view):  # out of scope: as if it did not exist
                raise UnknownName(f"unknown tool: {name[:64]!r}")
            return await row.run(row.parse(arguments, view.policy), self._context(record, view, progress))

        try:
            return await self._audited(name, arguments or {}, client, work)
        except ToolError as exc:
            return _error(exc.message)

    def prompts(self, client: str | None = None) -> list[types.Prompt]:
        view = client_view(self.generation, client)
        return [prompt for prompt in prompts.listing() if view.scope.allows_prompt(prompt.name)]

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None, client: str | None = None
    ) -> types.GetPromptResult:
        """A rendered prompt. Raises ToolError (bad arguments) or UnknownName."""

        async def work(record: CallRecord, view: ClientView) -> types.GetPromptResult:
            if not view.scope.allows_prompt(name):
                raise prompts.unknown(name)
            return prompts.get(name, arguments, self._context(record, view))

        return await self._audited("prompts/get", {"name": name, "arguments": arguments or {}}, client, work)

    def resources(self, client: str | None = None) -> list[types.Resource]:
        view = client_view(self.generation, client)
        return resources.listing(view.policy, view.allowlist)

    async def read_resource(self, uri: str, client: str | None = None) -> str:
        """The sanitized tail of an allowlisted log. Raises ToolError for the client."""

        async def work(record: CallRecord, view: ClientView) -> str:
            return await resources.read(uri, self._context(record, view))

        return await self._audited("resources/read", {"uri": uri}, client, work)

    def resource_templates(self, client: str | None = None) -> list[types.ResourceTemplate]:
        view = client_view(self.generation, client)
        return resources.templates() if view.scope.has_logs else []  # a scope without logs has no log to read

    async def complete(
        self,
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        client: str | None = None,
    ) -> types.Completion:
        """Values for one prompt or template argument. Raises ToolError or UnknownName."""

        async def work(record: CallRecord, view: ClientView) -> types.Completion:
            if isinstance(ref, types.PromptReference) and not view.scope.allows_prompt(ref.name):
                raise prompts.unknown(ref.name)
            if isinstance(ref, types.ResourceTemplateReference) and not view.scope.has_logs:
                raise UnknownName(completions.UNKNOWN_TEMPLATE)
            completion = completions.complete(ref, argument.name, argument.value, view.allowlist)
            record.reply = "ok"
            record.result_preview = preview(", ".join(completion.values))
            return completion

        arguments = {"ref": ref.model_dump(exclude_none=True), "argument": argument.model_dump()}
        return await self._audited("completion/complete", arguments, client, work)

    # --- slots and workers, for the call's work --------------------------------

    def _context(self, record: CallRecord, view: ClientView, progress: ProgressSink | None = None) -> CallContext:
        """What a call's work gets: the policy and allowlist as its client's scope shows them."""

        async def run_worker(
            kind: str,
            request: msgspec.Struct,
            fds: list[int],
            deadline_s: float,
            max_bytes: int,
            on_progress: OnProgress | None = None,
        ) -> tuple[WorkerResult, Worker]:
            return await self._run_worker(kind, request, fds, record, deadline_s, max_bytes, on_progress)

        return CallContext(
            policy=view.policy,
            allowlist=view.allowlist,
            pool=self.pool,
            ripgrep=self.ripgrep,
            record=record,
            slot=functools.partial(self._slot, view.policy.limits.max_queue),
            run_worker=run_worker,
            progress=progress,
        )

    @asynccontextmanager
    async def _slot(self, max_queue: int) -> AsyncIterator[None]:
        """One of max_workers slots; wait in a bounded queue (the call's policy's), else refuse as busy."""
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

    async def _run_worker(
        self,
        kind: str,
        request: msgspec.Struct,
        fds: list[int],
        record: CallRecord,
        deadline_s: float,
        max_bytes: int,
        on_progress: OnProgress | None = None,
    ) -> tuple[WorkerResult, Worker]:
        """One worker, in a slot the caller holds. A worker that replied is left to be
        stopped once the reply is out (record.stop_after_reply); any other is reaped already."""
        result = WorkerResult()
        async with self.pool.worker(kind) as worker:
            try:
                await worker.call(request, fds, deadline_s, max_bytes, result, stop_later=True, on_progress=on_progress)
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


def _admit(limiter: RateLimiter, client: str, tool: str, scope: Scope) -> None:
    decision = limiter.check(client, tool, scope.rate)
    if not decision.allowed:
        wait = decision.retry_after_s
        who = "for this client" if decision.scope == "client" else "for the server"
        raise ToolError(f"rate limited {who}: retry after {wait:g} s (retry_after_s={wait:g})", "denied_rate")


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
