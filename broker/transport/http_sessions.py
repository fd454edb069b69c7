"""Streamable HTTP sessions that cannot exhaust the server ([http] session settings).

Sits between broker/transport/http_gate.py and the SDK's session manager and keeps
broker/transport/session_table.py up to date from what passes: an `initialize`
without a session id that the SDK answers with one opens a session; every request
carrying the id is activity; a DELETE the SDK accepts closes it, a 404 for it means
the SDK had already let it expire. The SDK keeps `max_sessions` globally and knows
no owner quota, so the table decides, and a session it drops (idle, or evicted for
a cap) is ended the way a well-behaved client would end it: a DELETE sent straight
to the SDK with the owner's credentials. Its id then answers 404, which tells the
client to initialize again (MCP Streamable HTTP, session management).

A policy reload that revokes a client's token (broker/policy_generation.py) ends that
client's sessions the same way, at once (a session with a POST in flight once it is done).

Each session's opening and end is audited (event "session"); the id itself is a
credential's companion, so only a digest prefix is recorded.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import anyio
import mcp_types as types
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.calls import Bastion
from broker.transport.http_auth import http_client_name
from broker.transport.http_gate import answer
from broker.transport.jsonrpc_gate import Refusal, error_line
from broker.transport.peer import METHOD_KEY
from broker.transport.session_table import Cap, Session, SessionTable

log = logging.getLogger("bastion.http")
SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"
SWEEP_MIN_S, SWEEP_MAX_S = 0.25, 10.0
CLOSE_TIMEOUT_S = 5.0  # an in-process DELETE takes milliseconds; never wait on one for ever
CLOSER_KEYS = ("asgi", "http_version", "scheme", "path", "raw_path", "root_path", "server", "user", "auth")

REFUSED: dict[Cap, str] = {
    "max_sessions_per_client": "too many sessions for this client: every one is serving a request; retry shortly",
    "max_sessions": "too many open sessions: every one is serving a request; retry shortly",
}


def sid_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("latin-1", "replace")).hexdigest()[:16]


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope.get("headers") or [] if key == name), None)


def _opens_session(scope: Scope) -> bool:
    """An initialize the SDK's stateful (2025 protocol) path would open a session for."""
    version = _header(scope, VERSION_HEADER)
    handshake = version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS
    return scope.get("method") == "POST" and scope.get(METHOD_KEY) == "initialize" and handshake


def _closer(scope: Scope, session_id: str) -> Scope:
    """The scope of a DELETE for the session, as its owner would send it (same Host, same user)."""
    host = _header(scope, b"host")
    headers = [(SESSION_HEADER, session_id.encode("latin-1"))] + ([(b"host", host)] if host else [])
    kept = {key: scope[key] for key in CLOSER_KEYS if key in scope}
    return {**kept, "type": "http", "method": "DELETE", "query_string": b"", "headers": headers, "client": None}


class SessionKeeper:
    def __init__(
        self, app: ASGIApp, bastion: Bastion, table: SessionTable, authorized: Callable[[str], bool] | None = None
    ) -> None:
        self.app = app
        self.bastion = bastion
        self.table = table
        self.authorized = authorized  # whose token the current policy accepts (None: everyone's)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.sweep()
        session_id = _header(scope, SESSION_HEADER)
        if session_id is not None:
            await self._use(session_id.decode("latin-1"), scope, receive, send)
        elif _opens_session(scope):
            await self._open(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def sweep(self) -> None:
        for session_id, session in self.table.expire():
            await self._close(session_id, session, "expired")
        if self.authorized is not None:  # a policy reload may have revoked a client's token
            for session_id, session in self.table.withdraw(self.authorized):
                await self._close(session_id, session, "revoked")

    async def sweep_forever(self) -> None:
        """Expire idle sessions on time even when no request arrives. A failure is logged, never
        fatal: the server must not stop over it (and the SDK's own idle timeout still applies)."""
        interval = min(max(self.table.idle_timeout_s / 4, SWEEP_MIN_S), SWEEP_MAX_S)
        while True:
            await anyio.sleep(interval)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001
                log.exception("expiring idle HTTP sessions failed")

    async def _open(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = http_client_name() or self.bastion.client
        admission = self.table.admit(client)
        if admission.refused is not None:
            message = REFUSED[admission.refused]
            self.bastion.reject("initialize", client, message)
            await answer(send, 503, error_line(Refusal(types.INTERNAL_ERROR, message)))
            return
        established = False
        try:  # from here on the reservation is given back unless the session opens
            for eviction in admission.evictions:
                await self._close(eviction.session_id, eviction.session, "evicted", cap=eviction.cap)
            status, headers = await _served(self.app, scope, receive, send)
            session_id = headers.get(SESSION_HEADER, b"").decode("latin-1")
            if status is not None and status < 400 and session_id:
                self.table.opened(client, session_id, _closer(scope, session_id))
                established = True
                self.bastion.session_event("opened", client, sid_digest(session_id))
        finally:
            if not established:
                self.table.abandoned(client)

    async def _use(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        session = self.table.get(session_id)
        if session is None or session.client != (http_client_name() or self.bastion.client):
            await self.app(scope, receive, send)  # not its owner's, or unknown: the SDK answers 404
            return
        post = scope.get("method") == "POST"
        self.table.begin(session_id, post)
        try:
            status, _ = await _served(self.app, scope, receive, send)
        finally:
            self.table.end(session_id, post)
        if status == 404 and self.table.forget(session_id) is not None:
            self.bastion.session_event("expired", session.client, sid_digest(session_id))
        elif scope.get("method") == "DELETE" and status is not None and status < 300:
            if self.table.forget(session_id) is not None:
                self.bastion.session_event("closed", session.client, sid_digest(session_id))

    async def _close(self, session_id: str, session: Session, action: str, **fields: Any) -> None:
        """End a session the table dropped, then record why. Shielded: the table has already let
        it go, so a cancelled caller (a client that left) must not leave it open in the SDK."""
        status: int | None = None
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + CLOSE_TIMEOUT_S):
            try:
                if isinstance(session.owner, dict):  # opened() always stores its DELETE scope
                    status, _ = await _served(self.app, dict(session.owner), _no_body, _discard)
            except Exception:  # noqa: BLE001 - the SDK's own idle timeout still ends it
                log.exception("closing an HTTP session failed")
        if status not in (200, 202, 204, 404):
            log.warning("closing an HTTP session got status %s", status)
        self.bastion.session_event(action, session.client, sid_digest(session_id), **fields)


async def _served(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> tuple[int | None, dict[bytes, bytes]]:
    """Run `app` for one request; the status and headers it answered with (None: no answer)."""
    started: dict[str, Any] = {}

    async def watch(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        await send(message)

    await app(scope, receive, watch)
    return started.get("status"), dict(started.get("headers") or [])


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: Message) -> None:
    del message
