"""Token-bucket rate limiting per (client, tool) and for the whole broker.

A call is allowed only when both its (client, tool) bucket and the shared
global bucket hold a token; then one is taken from each. A refused call takes
nothing, so a client that keeps retrying while refused recovers as soon as
the window allows. Everything is synchronous and O(1) (amortised) per call, so
`check` is atomic on the event loop thread that calls it.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Tolerance in tokens: absorbs float noise so that retrying exactly
# `retry_after_s` later succeeds (it lets a token through at most ~1 µs early).
_EPS = 1e-6
ALL_CALLS = ""  # the tool of a client's bucket over all its calls (no tool has this name)


@dataclass(frozen=True)
class Rate:
    calls: int
    window_s: float

    def __post_init__(self) -> None:
        if isinstance(self.calls, bool) or not isinstance(self.calls, int) or self.calls < 1:
            raise ValueError(f"rate calls must be an integer >= 1, got {self.calls!r}")
        if not (isinstance(self.window_s, int | float) and math.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"rate window_s must be a finite number > 0, got {self.window_s!r}")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float  # 0.0 when allowed
    scope: str  # "" when allowed, else "client" or "global"


class TokenBucket:
    """`rate.calls` tokens at most, refilled continuously; starts full at `now`."""

    __slots__ = ("rate", "capacity", "_per_s", "_tokens", "_last")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.capacity = float(rate.calls)
        self._per_s = rate.calls / rate.window_s
        self._tokens = self.capacity
        self._last = now

    def _refill(self, now: float) -> None:
        # A clock that steps back must not mint tokens nor make later ones count twice.
        if now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self._per_s)
            self._last = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def wait_for(self, now: float, tokens: float = 1.0) -> float:
        """Seconds until `tokens` are available; 0.0 if they already are."""
        deficit = tokens - self.available(now)
        return 0.0 if deficit <= _EPS else deficit / self._per_s

    def take(self, now: float, tokens: float = 1.0) -> None:
        """Remove `tokens`; the caller has checked `wait_for(now, tokens) == 0.0`."""
        self._refill(now)
        self._tokens -= tokens

    def is_full(self, now: float) -> bool:
        return self.available(now) >= self.capacity - _EPS


def _round_up_ms(wait_s: float) -> float:
    # Round to the nanosecond first so float noise (0.30000000000000004) does not add a millisecond.
    return max(0.001, math.ceil(round(wait_s * 1000, 6)) / 1000)


class RateLimiter:
    def __init__(
        self,
        per_client: Rate,
        global_rate: Rate,
        per_tool: dict[str, Rate] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self._per_client = per_client
        self._per_tool = dict(per_tool or {})
        self._clock = clock
        self._max_keys = max_keys
        self._global = TokenBucket(global_rate, clock())
        # (client, tool) -> bucket, least recently used first.
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def check(self, client: str, tool: str, overall: Rate | None = None) -> Decision:
        """`overall`: a client's own rate over all its calls (its scope's), checked too."""
        now = self._clock()
        keys = [((client, tool), self._per_tool.get(tool, self._per_client))]
        if overall is not None:
            keys.append(((client, ALL_CALLS), overall))
        buckets = [(key, self._bucket(key, rate, now)) for key, rate in keys]
        client_wait = max(bucket.wait_for(now) for _, bucket in buckets)
        global_wait = self._global.wait_for(now)
        if client_wait > 0.0 or global_wait > 0.0:
            # On a tie, blame the client's own bucket: it alone would have refused.
            scope = "client" if client_wait >= global_wait else "global"
            return Decision(False, _round_up_ms(max(client_wait, global_wait)), scope)
        self._global.take(now)
        for key, bucket in buckets:
            bucket.take(now)
            if self._buckets.get(key) is not bucket:
                self._store(key, bucket, now)
        return Decision(True, 0.0, "")

    def _bucket(self, key: tuple[str, str], rate: Rate, now: float) -> TokenBucket:
        """The stored bucket for `key`, or an untracked full one. An untracked key is stored
        only once it has spent a token, so refused calls never grow (or churn) the table.
        A stored bucket of another rate (the policy changed) is replaced by one holding no
        more tokens than it had left."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return TokenBucket(rate, now)
        self._buckets.move_to_end(key)
        if bucket.rate != rate:
            fresh = TokenBucket(rate, now)
            fresh.take(now, max(0.0, fresh.capacity - bucket.available(now)))
            return fresh
        return bucket

    def _store(self, key: tuple[str, str], bucket: TokenBucket, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._evict(now)
        self._buckets[key] = bucket

    def _evict(self, now: float) -> None:
        # Full buckets carry no state, so dropping them loses nothing. Only the
        # least-recently-used end is scanned, which keeps eviction amortised O(1)
        # (each bucket is dropped at most once); then fall back to plain LRU.
        while self._buckets and next(iter(self._buckets.values())).is_full(now):
            self._buckets.popitem(last=False)
        if len(self._buckets) >= self._max_keys:
            self._buckets.popitem(last=False)
