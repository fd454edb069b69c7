"""Rate limiting: token buckets, per-client/per-tool/global limits, retry_after and memory bounds.

All timing runs on a fake clock; nothing sleeps.
"""

from __future__ import annotations

import pytest

from broker.ratelimit import Decision, Rate, RateLimiter, TokenBucket

ALLOWED = Decision(True, 0.0, "")


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


GENEROUS = Rate(1000, 1.0)  # the global rate of a test that sets none


def make(
    per_client: Rate,
    global_rate: Rate = GENEROUS,
    per_tool: dict[str, Rate] | None = None,
    max_keys: int = 10_000,
) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(per_client, global_rate, per_tool, clock=clock, max_keys=max_keys), clock


def refused(retry_after_s: float, scope: str) -> Decision:
    return Decision(False, retry_after_s, scope)


# --- TokenBucket ----------------------------------------------------------------


def test_bucket_starts_full_refills_continuously_and_caps() -> None:
    bucket = TokenBucket(Rate(4, 2.0), now=10.0)  # 2 tokens/s
    assert bucket.available(10.0) == 4.0
    bucket.take(10.0, 3.0)
    assert bucket.available(10.0) == 1.0
    assert bucket.wait_for(10.0) == 0.0
    assert bucket.wait_for(10.0, 2.0) == 0.5
    assert bucket.available(10.25) == 1.5
    assert bucket.available(100.0) == 4.0  # never above capacity


def test_bucket_ignores_clock_stepping_back() -> None:
    bucket = TokenBucket(Rate(2, 1.0), now=5.0)
    bucket.take(5.0, 2.0)
    assert bucket.available(4.0) == 0.0
    # Had 4.0 become the new reference point, 5.5 would look like 1.5 s of refill.
    assert bucket.available(5.5) == 1.0


# --- Rate -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calls", "window_s"),
    [(0, 1.0), (-1, 1.0), (1.5, 1.0), (True, 1.0), (1, 0.0), (1, -1.0), (1, float("nan")), (1, float("inf"))],
)
def test_rate_rejects_invalid(calls: object, window_s: object) -> None:
    with pytest.raises(ValueError):
        Rate(calls, window_s)  # type: ignore[arg-type]


def test_rate_accepts_valid() -> None:
    assert Rate(1, 0.001) == Rate(1, 0.001)
    assert Rate(5, 60).window_s == 60


def test_limiter_rejects_zero_max_keys() -> None:
    with pytest.raises(ValueError):
        RateLimiter(Rate(1, 1.0), Rate(1, 1.0), max_keys=0)


# --- RateLimiter ------------------------------------------------------------------


def test_burst_up_to_capacity_then_refused_with_exact_retry_after() -> None:
    limiter, _ = make(Rate(3, 1.5))  # one token per 0.5 s
    assert [limiter.check("a", "t") for _ in range(3)] == [ALLOWED] * 3
    assert limiter.check("a", "t") == refused(0.5, "client")


def test_refill_gives_exactly_one_more_call_per_interval() -> None:
    limiter, clock = make(Rate(3, 1.0))  # interval 1/3 s: not exact in binary
    for _ in range(3):
        assert limiter.check("a", "t").allowed
    clock.now = 1 / 3
    assert limiter.check("a", "t") == ALLOWED
    assert limiter.check("a", "t") == refused(0.334, "client")
    clock.now = 2 / 3 - 0.001
    assert limiter.check("a", "t") == refused(0.001, "client")
    clock.now = 2 / 3
    assert limiter.check("a", "t") == ALLOWED


def test_per_tool_rate_overrides_per_client() -> None:
    limiter, _ = make(Rate(2, 1.0), per_tool={"slow": Rate(1, 60.0)})
    assert limiter.check("a", "slow") == ALLOWED
    assert limiter.check("a", "slow") == refused(60.0, "client")
    # Other tools keep the default rate, in their own bucket.
    assert limiter.check("a", "fast") == ALLOWED
    assert limiter.check("a", "fast") == ALLOWED
    assert limiter.check("a", "fast") == refused(0.5, "client")
    # The override applies to every client, each with its own bucket.
    assert limiter.check("b", "slow") == ALLOWED
    assert limiter.check("b", "slow") == refused(60.0, "client")


def test_clients_are_independent_while_global_has_tokens() -> None:
    limiter, _ = make(Rate(2, 10.0), global_rate=Rate(10, 10.0))
    assert [limiter.check("a", "t").allowed for _ in range(5)] == [True, True, False, False, False]
    assert [limiter.check("b", "t").allowed for _ in range(2)] == [True, True]
    assert limiter.check("b", "t") == refused(5.0, "client")


def test_global_bucket_refuses_everyone() -> None:
    limiter, clock = make(Rate(10, 1.0), global_rate=Rate(3, 1.0))
    assert [limiter.check(c, "t").allowed for c in "abc"] == [True, True, True]
    assert limiter.check("d", "t") == refused(0.334, "global")
    assert limiter.check("a", "u") == refused(0.334, "global")
    clock.now = 1 / 3
    assert limiter.check("d", "t") == ALLOWED
    assert limiter.check("e", "t") == refused(0.334, "global")


def test_scope_names_the_bucket_with_the_longer_wait() -> None:
    client_slower, _ = make(Rate(1, 10.0), global_rate=Rate(1, 1.0))
    assert client_slower.check("a", "t") == ALLOWED
    assert client_slower.check("a", "t") == refused(10.0, "client")

    global_slower, _ = make(Rate(1, 1.0), global_rate=Rate(1, 10.0))
    assert global_slower.check("a", "t") == ALLOWED
    assert global_slower.check("a", "t") == refused(10.0, "global")

    tie, _ = make(Rate(1, 2.0), global_rate=Rate(1, 2.0))
    assert tie.check("a", "t") == ALLOWED
    assert tie.check("a", "t") == refused(2.0, "client")


def test_client_refusal_takes_nothing_from_global() -> None:
    limiter, _ = make(Rate(1, 100.0), global_rate=Rate(5, 100.0))
    assert limiter.check("a", "t") == ALLOWED
    for _ in range(20):
        assert limiter.check("a", "t") == refused(100.0, "client")
    # The global bucket still holds exactly the 4 tokens "a" did not spend.
    assert [limiter.check(c, "t").allowed for c in "bcde"] == [True] * 4
    assert limiter.check("f", "t") == refused(20.0, "global")


def test_global_refusal_takes_nothing_from_client_bucket() -> None:
    limiter, clock = make(Rate(3, 300.0), global_rate=Rate(4, 1.0))
    assert limiter.check("a", "t") == ALLOWED  # a's bucket is tracked, with 2 tokens left
    assert [limiter.check("b", "t").allowed for _ in range(3)] == [True] * 3
    for _ in range(20):
        assert limiter.check("a", "t") == refused(0.25, "global")
    clock.now = 1.0  # global is full again; a's bucket gained only 0.01 tokens
    assert [limiter.check("a", "t").allowed for _ in range(3)] == [True, True, False]
    assert limiter.check("a", "t") == refused(99.0, "client")


def test_hammering_while_refused_does_not_delay_recovery() -> None:
    limiter, clock = make(Rate(1, 1.0))
    assert limiter.check("a", "t") == ALLOWED
    for step in range(1, 10):
        clock.now = step / 10
        assert not limiter.check("a", "t").allowed
    clock.now = 1.0
    assert limiter.check("a", "t") == ALLOWED


@pytest.mark.parametrize(
    ("rate", "elapsed", "expected"),
    [
        (Rate(4, 2.0), 0.0, 0.5),  # exact
        (Rate(4, 2.0), 0.2, 0.3),  # 0.6 / 2 is 0.30000000000000004 in floats: must not become 0.301
        (Rate(10, 3.0), 0.0, 0.3),
        (Rate(3, 1.0), 0.0, 0.334),  # 0.3333... rounds up, not to nearest
        (Rate(1, 1.2345), 0.0, 1.235),  # 1234.5 ms rounds up
        (Rate(1, 1.0), 0.99999, 0.001),  # 10 µs left: at least 1 ms
        (Rate(1, 1.0), 0.9994, 0.001),
        (Rate(1, 1.0), 0.9989, 0.002),
        (Rate(10_000, 0.001), 9.99998e-8, 0.001),  # 2e-13 s left: still reported as 1 ms
    ],
)
def test_retry_after_rounds_up_to_the_millisecond(rate: Rate, elapsed: float, expected: float) -> None:
    limiter, clock = make(rate, global_rate=Rate(100_000, 1.0))
    while limiter.check("a", "t").allowed:
        pass
    clock.now = elapsed
    decision = limiter.check("a", "t")
    assert decision == refused(expected, "client")
    # Retrying after exactly retry_after succeeds; 1 ms earlier does not.
    clock.now = elapsed + expected - 0.001
    assert not limiter.check("a", "t").allowed
    clock.now = elapsed + expected
    assert limiter.check("a", "t") == ALLOWED


def test_eviction_drops_full_buckets_and_an_evicted_one_starts_fresh() -> None:
    limiter, clock = make(Rate(2, 1.0), max_keys=3)
    assert [limiter.check("c0", "t").allowed for _ in range(3)] == [True, True, False]
    clock.now = 1.0  # c0 has refilled completely
    assert limiter.check("c1", "t") == ALLOWED
    assert limiter.check("c2", "t") == ALLOWED
    assert limiter.check("c3", "t") == ALLOWED
    assert len(limiter) == 3
    assert ("c0", "t") not in limiter
    assert all((c, "t") in limiter for c in ("c1", "c2", "c3"))
    # c0 gets a whole fresh burst, exactly as if it had been kept.
    assert [limiter.check("c0", "t").allowed for _ in range(3)] == [True, True, False]
    assert len(limiter) == 3


def test_eviction_keeps_memory_bounded() -> None:
    limiter, clock = make(Rate(1, 1.0), max_keys=3)
    for i in range(10):
        clock.now = i * 0.25  # no bucket has refilled yet when the next client arrives
        assert limiter.check(f"c{i}", "t") == ALLOWED
        assert len(limiter) <= 3
    assert len(limiter) == 3
    assert [k for k in ("c7", "c8", "c9") if (k, "t") in limiter] == ["c7", "c8", "c9"]
    # Idle buckets that are full again are all dropped on the next insertion.
    clock.now = 100.0
    assert limiter.check("late", "t") == ALLOWED
    assert len(limiter) == 1


def test_lru_eviction_when_no_bucket_is_full() -> None:
    limiter, _ = make(Rate(2, 10.0), max_keys=3)
    for client in ("a", "b", "c"):
        assert limiter.check(client, "t") == ALLOWED
    assert limiter.check("a", "t") == ALLOWED  # a becomes most recently used: b is now the oldest
    assert limiter.check("d", "t") == ALLOWED
    assert ("b", "t") not in limiter
    assert all((c, "t") in limiter for c in "acd")
    # a kept its state (both tokens spent); b lost it and gets a full burst again.
    assert limiter.check("a", "t") == refused(5.0, "client")
    assert [limiter.check("b", "t").allowed for _ in range(3)] == [True, True, False]


def test_refused_call_from_new_key_is_not_stored() -> None:
    limiter, _ = make(Rate(5, 1.0), global_rate=Rate(1, 10.0), max_keys=2)
    assert limiter.check("a", "t") == ALLOWED
    for client in ("x", "y", "z"):
        assert limiter.check(client, "t") == refused(10.0, "global")
    assert len(limiter) == 1
    assert ("a", "t") in limiter


# (time, client, tool) -> expected Decision.
# per_client 2/1 s (0.5 s per token), global 3/1 s (1/3 s per token), "slow" 1/4 s.
SCRIPT: list[tuple[float, str, str, Decision]] = [
    (0.0, "a", "x", ALLOWED),
    (0.0, "a", "x", ALLOWED),
    (0.0, "a", "x", refused(0.5, "client")),  # global still has 1
    (0.0, "b", "x", ALLOWED),  # global now empty
    (0.0, "b", "x", refused(0.334, "global")),  # b/x still has a token
    (0.0, "a", "x", refused(0.5, "client")),  # both empty: client waits longer
    (0.25, "b", "slow", refused(0.084, "global")),  # global at 0.75 tokens
    (0.334, "b", "slow", ALLOWED),  # global at 1.002
    (0.334, "b", "slow", refused(4.0, "client")),
    (0.5, "a", "x", refused(0.167, "global")),  # a/x has 1, global 0.5
    (0.667, "a", "x", ALLOWED),  # global 1.001
    (1.0, "c", "y", ALLOWED),  # global exactly 1.0 again
    (1.0, "c", "y", refused(0.334, "global")),
    (4.334, "b", "slow", ALLOWED),  # slow bucket exactly refilled
    (4.334, "b", "slow", refused(4.0, "client")),
]


def test_scripted_sequence() -> None:
    limiter, clock = make(Rate(2, 1.0), global_rate=Rate(3, 1.0), per_tool={"slow": Rate(1, 4.0)})
    actual = []
    for now, client, tool, _ in SCRIPT:
        clock.now = now
        actual.append((now, client, tool, limiter.check(client, tool)))
    assert actual == SCRIPT
