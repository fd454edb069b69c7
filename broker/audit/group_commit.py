"""Group commit for the audit log: one fdatasync, off the event loop, for many records.

A call's result may leave only once its "end" record is on disk. Syncing each
record on the event loop stalls every other call for the sync's duration, and
16 concurrent calls pay for 16 syncs. Here records are written (one write(),
in the page cache and chained at once) and `durable(seq)` waits until a sync
that started after record `seq` was written has finished. While one sync runs
in a thread, the records written meanwhile wait for the next one, which then
covers all of them: a burst of calls costs about two syncs, not one per call.

A failed sync fails every call that waited on it (their results are withheld,
as before), is logged, and leaves the records unsynced: the next sync
covers them again. Nothing is cut from the file, since later records of
other calls may already follow them in the chain.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import anyio
import anyio.to_thread

from broker.audit.log import AuditError, AuditLog

log = logging.getLogger("bastion.audit")

# Module-level so a test can make the disk fail or stall.
sync_file: Callable[[int], None] = os.fdatasync


class GroupCommit:
    """Makes records of one AuditLog durable in batches, one sync at a time."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._running: anyio.Event | None = None  # set when the sync in flight ends
        self._failed_upto = 0  # a sync that covered up to here failed: its waiters must not pass
        self.syncs = 0  # syncs started, for tests and the bench

    async def durable(self, seq: int) -> None:
        """Return once record `seq` is on disk; AuditError if the sync covering it failed."""
        while self.audit.durable_seq < seq:
            if self._running is not None:
                running = self._running
                await running.wait()
                if self._failed_upto >= seq and self.audit.durable_seq < seq:
                    raise AuditError(f"cannot sync audit log {self.audit.path}: the disk refused it")
                continue
            await self._sync_batch()
            if self.audit.durable_seq < seq:
                raise AuditError(f"cannot sync audit log {self.audit.path}: the disk refused it")

    async def _sync_batch(self) -> None:
        """One sync covering every record written so far; it runs in a worker thread."""
        done = self._running = anyio.Event()
        fd, upto = self.audit.sync_handle()  # a dup: a rotation may close the log's own fd meanwhile
        self.syncs += 1
        try:
            await anyio.to_thread.run_sync(_sync_and_close, fd, abandon_on_cancel=False)
        except OSError as exc:
            self._failed_upto = max(self._failed_upto, upto)
            log.error("audit log sync of records up to seq %d failed: %s", upto, exc.strerror or exc)
        else:
            self.audit.mark_durable(upto)
        finally:
            self._running = None
            done.set()


def _sync_and_close(fd: int) -> None:
    try:
        sync_file(fd)
    finally:
        os.close(fd)
