"""What a tool's body gets from the call's envelope (broker/calls.py).

The envelope hands these in, so that a call enters its tool module and leaves it once, and
no tool imports the envelope: the policy, the pinned allowlist, the call's record, and the
means to run workers (a slot, then one worker in it, its end written to the record), and,
when the client asked for progress notifications, where to report progress (the transport
rate-limits and sends them: broker/transport/client_progress.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import msgspec

from broker.call_record import CallRecord
from broker.files.allowlist import Allowlist
from broker.policy import Policy
from broker.pool.ready_workers import WorkerPool
from broker.pool.worker_process import OnProgress, Worker, WorkerResult

# progress, total, message: how far the call's work has got, for the client (never going back)
ProgressSink = Callable[[float, float, str | None], Awaitable[None]]


class RunWorker(Protocol):
    """kind, request, descriptors, deadline_s, max_bytes -> the result and its worker, in a slot
    the caller holds; the worker's progress frames go to `on_progress`."""

    def __call__(
        self,
        kind: str,
        request: msgspec.Struct,
        fds: list[int],
        deadline_s: float,
        max_bytes: int,
        on_progress: OnProgress | None = None,
    ) -> Awaitable[tuple[WorkerResult, Worker]]: ...


@dataclass(frozen=True)
class CallContext:
    policy: Policy
    allowlist: Allowlist
    pool: WorkerPool
    ripgrep: bool  # whether the pool's grep workers can run ripgrep (asked once, at start)
    record: CallRecord
    slot: Callable[[], AbstractAsyncContextManager[None]]  # one of max_workers, or busy
    run_worker: RunWorker
    progress: ProgressSink | None = None  # None: the client asked for no progress notifications

    async def run(self, kind: str, request: msgspec.Struct, fds: list[int]) -> WorkerResult:
        """One worker in a slot of its own, with the call's whole time and byte budgets."""
        limits = self.policy.limits
        async with self.slot():
            result, _ = await self.run_worker(kind, request, fds, limits.timeout_s, limits.max_output_bytes)
        return result

    async def stop_early(self, worker: Worker, result: WorkerResult) -> None:
        """A worker of a batch that is not the call's last: stopped at once (a call may need
        hundreds; none may linger), not after the reply."""
        record = self.record
        if record.stop_after_reply is not None and record.stop_after_reply[0] is worker:
            record.stop_after_reply = None
        if record.worker is not None and record.worker.follows:  # it is stopped here, not after the reply
            record.worker = dataclasses.replace(record.worker, follows=False)
        await worker.finish(result)
