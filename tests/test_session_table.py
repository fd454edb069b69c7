"""broker/transport/session_table.py: idle expiry, the per-client cap and the global cap."""

from __future__ import annotations

from broker.transport.session_table import SessionTable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(per_client: int = 2, total: int = 4, idle: float = 10) -> tuple[SessionTable, Clock]:
    clock = Clock()
    return SessionTable(idle, per_client, total, clock), clock


def open_session(sessions: SessionTable, clock: Clock, client: str, session_id: str) -> list[str]:
    """Open one session a second later than the last; the ids it evicted."""
    clock.now += 1
    admission = sessions.admit(client)
    assert admission.refused is None
    sessions.opened(client, session_id, {"owner": client})
    return [eviction.session_id for eviction in admission.evictions]


def test_a_client_at_its_cap_loses_its_least_recently_used_session() -> None:
    sessions, clock = table(per_client=2)
    assert open_session(sessions, clock, "alice", "a1") == []
    assert open_session(sessions, clock, "alice", "a2") == []
    clock.now += 1
    sessions.begin("a1", post=True)  # a1 used after a2 was opened: a2 is now the older
    sessions.end("a1", post=True)
    assert open_session(sessions, clock, "alice", "a3") == ["a2"]
    assert sessions.get("a2") is None and sessions.count("alice") == 2


def test_a_session_serving_a_post_is_never_evicted_and_the_opening_is_refused() -> None:
    sessions, clock = table(per_client=1)
    open_session(sessions, clock, "alice", "a1")
    sessions.begin("a1", post=True)
    admission = sessions.admit("alice")
    assert admission.refused == "max_sessions_per_client" and not admission.evictions
    assert sessions.get("a1") is not None
    sessions.end("a1", post=True)
    assert open_session(sessions, clock, "alice", "a2") == ["a1"]


def test_an_open_event_stream_does_not_protect_a_session_from_eviction() -> None:
    sessions, clock = table(per_client=1)
    open_session(sessions, clock, "alice", "a1")
    sessions.begin("a1", post=False)  # a GET stream a forgotten host keeps open
    assert open_session(sessions, clock, "alice", "a2") == ["a1"]


def test_the_global_cap_takes_from_the_client_holding_most() -> None:
    sessions, clock = table(per_client=3, total=4)
    open_session(sessions, clock, "bob", "b1")  # the oldest session of all, but bob holds one
    for name in ("a1", "a2", "a3"):
        open_session(sessions, clock, "alice", name)
    assert open_session(sessions, clock, "carol", "c1") == ["a1"]
    assert open_session(sessions, clock, "dave", "d1") == ["a2"]
    assert {sessions.count(name) for name in ("alice", "bob", "carol", "dave")} == {1}
    assert len(sessions) == 4


def test_the_global_cap_refuses_only_when_every_session_is_busy() -> None:
    sessions, clock = table(per_client=2, total=2)
    open_session(sessions, clock, "alice", "a1")
    open_session(sessions, clock, "bob", "b1")
    sessions.begin("a1", post=True)
    sessions.begin("b1", post=True)
    refused = sessions.admit("carol")
    assert refused.refused == "max_sessions" and not refused.evictions and len(sessions) == 2
    sessions.end("b1", post=True)
    assert open_session(sessions, clock, "carol", "c1") == ["b1"]  # a1 is older, but busy
    assert sessions.get("a1") is not None and sessions.get("c1") is not None


def test_openings_in_flight_count_against_both_caps() -> None:
    sessions, _ = table(per_client=2, total=3)
    assert sessions.admit("alice").refused is None
    assert sessions.admit("alice").refused is None
    assert sessions.admit("alice").refused == "max_sessions_per_client"  # nothing of hers to close yet
    assert sessions.admit("bob").refused is None
    assert sessions.admit("bob").refused == "max_sessions"
    sessions.abandoned("alice")  # an opening the SDK refused gives its room back
    assert sessions.admit("bob").refused is None


def test_idle_sessions_expire_and_requests_in_flight_hold_them() -> None:
    sessions, clock = table(idle=10)
    open_session(sessions, clock, "alice", "a1")
    open_session(sessions, clock, "alice", "a2")
    open_session(sessions, clock, "bob", "b1")
    sessions.begin("a2", post=False)  # an open event stream
    clock.now += 7.5
    assert sessions.expire() == []
    sessions.begin("b1", post=True)
    sessions.end("b1", post=True)  # activity restarts the countdown
    clock.now += 2
    assert [sid for sid, _ in sessions.expire()] == ["a1"]  # opened at 1001, idle since
    sessions.begin("b1", post=True)  # a long call: never idle while it runs
    clock.now += 60
    assert sessions.expire() == []
    sessions.end("b1", post=True)
    sessions.end("a2", post=False)
    clock.now += 9.9
    assert sessions.expire() == []
    clock.now += 0.1
    assert sorted(sid for sid, _ in sessions.expire()) == ["a2", "b1"] and len(sessions) == 0


def test_forget_and_unknown_ids() -> None:
    sessions, clock = table()
    open_session(sessions, clock, "alice", "a1")
    sessions.begin("nope", post=True)  # unknown ids are ignored
    sessions.end("nope", post=True)
    assert sessions.forget("nope") is None
    forgotten = sessions.forget("a1")
    assert forgotten is not None and forgotten.client == "alice" and forgotten.owner == {"owner": "alice"}
    assert len(sessions) == 0
