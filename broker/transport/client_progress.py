"""notifications/progress for one request that carried a progressToken.

A tool reports as often as its workers do (broker/tools/context.py ProgressSink);
the client gets at most one notification per INTERVAL_S, each further than the
last, and, if it got any, a last one at the total once the work is over, so a
progress bar always ends full, also when the search stopped early (max_lines).
Progress is advisory: a notification that cannot be sent is logged and the
rest are dropped, and the call goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("bastion.progress")

INTERVAL_S = 0.25  # at most 4 notifications a second
FINISHED = "search finished"
# progress, total, message: e.g. ServerSession.report_progress, which sends against the request's token
Send = Callable[[float, float | None, str | None], Awaitable[None]]


class ClientProgress:
    def __init__(self, send: Send, clock: Callable[[], float] = time.monotonic, interval_s: float = INTERVAL_S) -> None:
        self._send, self._clock, self._interval = send, clock, interval_s
        self._next = 0.0
        self.sent = 0  # notifications sent
        self.progress = 0.0  # the last one's value
        self.total = 0.0
        self._broken = False

    async def __call__(self, progress: float, total: float, message: str | None) -> None:
        """A report from the tool; sent if it moves on and the rate allows."""
        self.total = max(self.total, total)
        now = self._clock()
        if progress <= self.progress or now < self._next:
            return
        self._next = now + self._interval
        await self._notify(min(progress, self.total), message)

    async def finish(self) -> None:
        """The work is over: if the client was told anything, tell it the work is complete."""
        if self.sent and self.progress < self.total:
            await self._notify(self.total, FINISHED)

    async def _notify(self, progress: float, message: str | None) -> None:
        if self._broken:
            return
        try:
            await self._send(progress, self.total, message)
        except Exception as exc:  # noqa: BLE001 - advisory: the call's own reply decides
            log.warning("progress notification not sent (%s); no more for this request", type(exc).__name__)
            self._broken = True
            return
        self.sent += 1
        self.progress = progress
