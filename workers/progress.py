"""How far a search has got, reported to the broker at a bounded rate.

The measure is what the worker itself can see of its input: each handed-over
descriptor's offset (lseek(fd, 0, SEEK_CUR)). A descriptor arrives over
SCM_RIGHTS, so it shares its open file description with the broker's copy, and
a lone plain file is the engine's stdin (the same description again): the
offset moves as the engine reads, as the worker reads a .gz or a joined run to
feed them. A .gz is measured in compressed bytes, like its size. GNU grep -m
may seek its stdin back to just after its last match, and a file searched again
starts from 0: the broker, not this module, keeps what the client sees from
going back.

At most one frame per INTERVAL_S, and none while nothing changed: a search
that sends lines steadily costs at most a few frames a second more.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from bastion_wire.protocol import Progress
from workers.channel import Send

INTERVAL_S = 0.25


class ProgressMeter:
    def __init__(
        self,
        fds: list[int],
        send: Send,
        before_send: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._fds, self._send, self._before_send = fds, send, before_send
        self._clock, self._interval = clock, interval_s
        self._next = clock() + interval_s  # nothing in the first interval: short searches send none
        self._last: tuple[int, int] | None = None

    def wait_ms(self) -> int:
        """How long a poll may block before the next report is due (at least 1 ms)."""
        return max(1, int((self._next - self._clock()) * 1000) + 1)

    def tick(self, files_done: int) -> None:
        """Report, if a report is due and anything changed since the last one."""
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._interval
        current = (self._scanned(), files_done)
        if current == self._last:
            return
        self._last = current
        self._before_send()  # lines found before this point leave first
        self._send(Progress(scanned=current[0], files_done=current[1]))

    def _scanned(self) -> int:
        total = 0
        for fd in self._fds:
            try:
                total += os.lseek(fd, 0, os.SEEK_CUR)
            except OSError:  # not expected of a regular file; it then counts nothing this time
                continue
        return total
