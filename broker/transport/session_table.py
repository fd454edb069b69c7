"""Which Streamable HTTP sessions are open, whose they are, and which one has to go.

Hosts such as the Inspector and the TypeScript SDK never DELETE their session, so
sessions pile up unless the server ends them. This table is the bookkeeping behind
broker/transport/http_sessions.py, kept free of I/O so its rules are tested directly:

- idle expiry: a session with no request in flight (no POST being served, no open
  GET stream) and none arriving for `idle_timeout_s` has expired;
- a per-client cap: a client opening a session beyond `per_client` loses its own
  least recently used session, so a host that forgets its sessions keeps working
  and can never hold more than its share;
- the global cap: at `total` sessions, a new one costs the least recently used
  session of the client holding the most, so no client can lock the others out;
- withdrawal: the sessions of a client whose token a policy reload revoked.

A session with a POST in flight is never chosen (its call would be cut off); if no
session can be chosen the opening is refused, and the client is told to retry.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Cap = Literal["max_sessions_per_client", "max_sessions"]


@dataclass
class Session:
    client: str
    last_seen: float
    owner: object = None  # what the transport needs to close it (opaque here)
    posts: int = 0  # POSTs in flight
    streams: int = 0  # other requests in flight (GET event streams)

    @property
    def busy(self) -> bool:
        return self.posts > 0


@dataclass(frozen=True)
class Eviction:
    session_id: str
    session: Session
    cap: Cap


@dataclass(frozen=True)
class Admission:
    """What opening a session takes: the sessions to close first, or why it is refused."""

    evictions: list[Eviction] = field(default_factory=list)
    refused: Cap | None = None


class SessionTable:
    def __init__(
        self, idle_timeout_s: float, per_client: int, total: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.per_client = per_client
        self.total = total
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._opening: Counter[str] = Counter()  # admitted openings not answered yet, per client

    def __len__(self) -> int:
        return len(self._sessions)

    def count(self, client: str) -> int:
        return sum(1 for session in self._sessions.values() if session.client == client)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    # --- opening ---------------------------------------------------------------

    def admit(self, client: str) -> Admission:
        """Reserve room for one more session of `client` (call opened() or abandoned() after).
        Closing one of the client's own sessions also frees a place under the global cap."""
        cap: Cap
        if self.count(client) + self._opening[client] >= self.per_client:
            cap, victim = "max_sessions_per_client", self._lru(client)
        elif len(self._sessions) + self._opening.total() >= self.total:
            cap, victim = "max_sessions", self._lru_of_heaviest()
        else:
            self._opening[client] += 1
            return Admission()
        if victim is None:
            return Admission(refused=cap)
        self._opening[client] += 1
        return Admission([Eviction(victim, self._sessions.pop(victim), cap)])

    def opened(self, client: str, session_id: str, owner: object) -> None:
        self._release(client)
        self._sessions[session_id] = Session(client, self._clock(), owner)

    def abandoned(self, client: str) -> None:
        """The admitted opening failed: nothing was established."""
        self._release(client)

    def _release(self, client: str) -> None:
        self._opening[client] -= 1
        if self._opening[client] <= 0:
            del self._opening[client]

    def _lru(self, client: str) -> str | None:
        idle = [(s.last_seen, sid) for sid, s in self._sessions.items() if s.client == client and not s.busy]
        return min(idle)[1] if idle else None

    def _lru_of_heaviest(self) -> str | None:
        held = Counter(session.client for session in self._sessions.values())
        candidates = [(-held[s.client], s.last_seen, sid) for sid, s in self._sessions.items() if not s.busy]
        return min(candidates)[2] if candidates else None

    # --- use -------------------------------------------------------------------

    def begin(self, session_id: str, post: bool) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_seen = self._clock()
            if post:
                session.posts += 1
            else:
                session.streams += 1

    def end(self, session_id: str, post: bool) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_seen = self._clock()
            if post:
                session.posts -= 1
            else:
                session.streams -= 1

    def forget(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def withdraw(self, authorized: Callable[[str], bool]) -> list[tuple[str, Session]]:
        """Remove and return the sessions of clients no longer `authorized` (a reload revoked
        their token) that have no POST in flight; one that has goes once its POST is done."""
        gone = [sid for sid, s in self._sessions.items() if not s.busy and not authorized(s.client)]
        return [(sid, self._sessions.pop(sid)) for sid in gone]

    def expire(self) -> list[tuple[str, Session]]:
        """Remove and return the sessions idle for idle_timeout_s with nothing in flight."""
        cutoff = self._clock() - self.idle_timeout_s
        gone = [sid for sid, s in self._sessions.items() if not s.posts and not s.streams and s.last_seen <= cutoff]
        return [(sid, self._sessions.pop(sid)) for sid in gone]
