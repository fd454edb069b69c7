"""Ready, confined, single-use workers per kind, refilled in the background.

Workers are forked by the launcher (broker/pool/launcher.py) and confine
themselves before they say Ready; a few per kind ([workers] prestart) wait
idle so that start-up and sandbox cost is paid between calls rather than
during one. A worker serves exactly one call and is never reused.
"""

from __future__ import annotations

import logging
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc

from bastion_wire.plan import Plan
from broker.pool.launcher import Launcher
from broker.pool.worker_process import REAP_TIMEOUT_S, SETUP_TIMEOUT_S, SandboxUnavailable, Worker, start_worker
from broker.sandbox.cgroup import CgroupHost
from broker.tools.query_logs.engine import has_ripgrep

log = logging.getLogger("bastion.pool")

REFILL_DELAY_S = 0.015


class WorkerPool:
    """Ready, confined, single-use workers per kind, refilled in the background."""

    def __init__(self, plans: dict[str, Plan], cgroups: CgroupHost, prestart: int, worker_stderr: bool = False) -> None:
        self._plans = plans
        self._cgroups = cgroups
        self._prestart = prestart
        self._launcher = Launcher(stderr=None if worker_stderr else subprocess.DEVNULL)
        self._idle: dict[str, deque[Worker]] = {kind: deque() for kind in plans}
        self._starting: dict[str, int] = {kind: 0 for kind in plans}  # refills under way
        self._waiting: dict[str, int] = {kind: 0 for kind in plans}  # callers waiting for one
        self._added: dict[str, anyio.Event] = {kind: anyio.Event() for kind in plans}
        self._wanted: dict[str, anyio.Event] = {kind: anyio.Event() for kind in plans}  # a caller waits
        self._closed = False
        self._after = 0  # background work after calls, still running
        self._task_group: anyio.abc.TaskGroup | None = None
        self.layers: dict[str, list[str]] = {}

    def memory_limit(self, kind: str) -> int:
        """The memory cap of this kind's workers (its profile's [cgroup] memory_bytes)."""
        return self._plans[kind].cgroup_limits.memory_bytes

    @property
    def plans(self) -> dict[str, Plan]:
        """The plans the workers start from (fixed for the pool's life: a reload compares them)."""
        return dict(self._plans)

    def has_ripgrep(self) -> bool:
        return "grep" in self._plans and has_ripgrep(self._plans["grep"])

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start one worker of every kind now; raise SandboxUnavailable if any cannot be confined."""
        self._task_group = task_group
        for kind in self._plans:
            worker = await self._start_worker(kind)
            self.layers[kind] = worker.layers
            self._idle[kind].append(worker)
            self._refill(kind)

    async def _start_worker(self, kind: str) -> Worker:
        return await start_worker(await self._launcher.spawn(self._plans[kind], self._cgroups))

    def _refill(self, kind: str) -> None:
        if self._closed:
            return
        missing = self._prestart - len(self._idle[kind]) - self._starting[kind]
        for _ in range(max(0, missing)):
            if self._task_group is not None:
                self._starting[kind] += 1
                self._task_group.start_soon(self._refill_one, kind)

    async def _refill_one(self, kind: str) -> None:
        try:
            # Let the call that just ended send its reply first (~5 ms of SDK work
            # that a worker confining itself would compete with on a small host),
            # while another worker is still ready and nobody waits for this one.
            if self._idle[kind]:
                with anyio.move_on_after(REFILL_DELAY_S):
                    await self._wanted[kind].wait()
            worker = await self._start_worker(kind)
            if self._closed:
                await worker.finish()
            else:
                self._idle[kind].append(worker)
        except SandboxUnavailable as exc:
            log.error("could not start a %s worker: %s", kind, exc)
        finally:
            self._starting[kind] -= 1
            self._added[kind].set()  # waiters look again (and start their own if this failed)
            self._added[kind] = anyio.Event()

    @asynccontextmanager
    async def worker(self, kind: str) -> AsyncIterator[Worker]:
        """A ready worker of this kind for one call, used by nobody before and never
        again after. The pool is topped up when the call is over, so that starting
        the next worker does not compete with this call for the CPU."""
        try:
            yield await self._take(kind)
        finally:
            self._refill(kind)

    async def _take(self, kind: str) -> Worker:
        idle = self._idle[kind]
        while True:  # each pass returns, or waits for a refill that is under way
            while idle:
                worker = idle.popleft()
                if not worker.exited():
                    return worker
                await worker.finish()
            if self._starting[kind] <= self._waiting[kind]:
                return await self._start_worker(kind)  # no refill left for this caller
            self._waiting[kind] += 1
            self._wanted[kind].set()
            self._wanted[kind] = anyio.Event()
            try:
                await self._added[kind].wait()
            finally:
                self._waiting[kind] -= 1

    def after_call(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` in the background (stopping a worker once its reply is out); close() waits for it."""
        if self._task_group is None:
            raise RuntimeError("the pool is not started")
        self._after += 1
        self._task_group.start_soon(self._run_after, work)

    async def _run_after(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        finally:
            self._after -= 1

    async def close(self) -> None:
        """Stop refilling, let workers being started or stopped finish, kill and reap every idle one."""
        self._closed = True
        with anyio.move_on_after(SETUP_TIMEOUT_S + REAP_TIMEOUT_S):
            while any(self._starting.values()) or self._after:
                await anyio.sleep(0.01)
        for idle in self._idle.values():
            while idle:
                await idle.popleft().finish()
        await self._launcher.close()
        self._cgroups.close()
