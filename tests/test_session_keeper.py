"""broker/transport/http_sessions.py in process, on a stand-in for the SDK's app: which requests
open a session, the DELETE that ends one (as its owner), and failures that must not be fatal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from broker.transport.http_sessions import SessionKeeper, sid_digest
from broker.transport.peer import METHOD_KEY
from broker.transport.session_table import SessionTable


class Audit:
    """Stands in for Bastion: what the keeper records."""

    client = "http"

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, dict[str, Any]]] = []
        self.rejected: list[tuple[str | None, str | None, str]] = []

    def session_event(self, action: str, client: str, sid_sha256: str, **fields: Any) -> None:
        self.events.append((action, client, sid_sha256, fields))

    def reject(self, method: str | None, client: str | None, message: str) -> None:
        self.rejected.append((method, client, message))


class FakeSDK:
    """Answers an opening request with a new session id and records every scope it gets."""

    def __init__(self, fail_deletes: bool = False, delete_s: float = 0) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.fail_deletes = fail_deletes
        self.delete_s = delete_s
        self.deleted = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["method"] == "DELETE" and self.fail_deletes:
            raise RuntimeError("the SDK broke")
        if scope["method"] == "DELETE":
            await anyio.sleep(self.delete_s)
            self.deleted += 1
        await anyio.sleep(0)  # a checkpoint, as in any real app
        headers = [] if scope["method"] == "DELETE" else [(b"mcp-session-id", f"s{len(self.scopes)}".encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})


def user(name: str) -> AuthenticatedUser:
    return AuthenticatedUser(AccessToken(token="sha256:x", client_id=name, scopes=[]))


@contextmanager
def as_client(name: str) -> Iterator[AuthenticatedUser]:
    who = user(name)
    token = auth_context_var.set(who)
    try:
        yield who
    finally:
        auth_context_var.reset(token)


def initialize(who: AuthenticatedUser, version: str | None = None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8765")] + ([(b"mcp-protocol-version", version.encode())] if version else [])
    return {"type": "http", "method": "POST", "path": "/mcp", "headers": headers, "user": who, METHOD_KEY: "initialize"}


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    del message


def keeper(sdk: FakeSDK, per_client: int = 1, idle: float = 300) -> tuple[SessionKeeper, Audit]:
    audit = Audit()
    return SessionKeeper(sdk, audit, SessionTable(idle, per_client, 10)), audit  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_an_eviction_is_a_delete_with_the_owners_credentials_and_host() -> None:
    sdk = FakeSDK()
    keep, audit = keeper(sdk, per_client=1)
    with as_client("alice") as alice:
        await keep(initialize(alice), receive, send)
        await keep(initialize(alice), receive, send)
    opening, delete, _ = sdk.scopes
    assert delete["method"] == "DELETE" and delete["user"] is alice and delete["path"] == "/mcp"
    assert dict(delete["headers"]) == {b"mcp-session-id": b"s1", b"host": b"127.0.0.1:8765"}
    assert METHOD_KEY not in delete and opening["user"] is alice
    assert [(a, c, s, f) for a, c, s, f in audit.events] == [
        ("opened", "alice", sid_digest("s1"), {}),
        ("evicted", "alice", sid_digest("s1"), {"cap": "max_sessions_per_client"}),
        ("opened", "alice", sid_digest("s3"), {}),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("version", "method", "opens"),
    [(None, "initialize", True), ("2025-06-18", "initialize", True), ("2026-07-28", "initialize", False),
     (None, "tools/list", False), (None, None, False)],
)  # fmt: skip
async def test_only_a_handshake_initialize_counts_as_opening(
    version: str | None, method: str | None, opens: bool
) -> None:
    sdk = FakeSDK()
    keep, audit = keeper(sdk, per_client=1)
    with as_client("alice") as alice:
        for _ in range(2):
            await keep({**initialize(alice, version), METHOD_KEY: method}, receive, send)
    assert [a for a, *_ in audit.events] == (["opened", "evicted", "opened"] if opens else [])
    assert [s["method"] for s in sdk.scopes] == (["POST", "DELETE", "POST"] if opens else ["POST", "POST"])


@pytest.mark.anyio
async def test_a_failing_close_is_recorded_and_the_sweep_goes_on() -> None:
    sdk = FakeSDK(fail_deletes=True)
    keep, audit = keeper(sdk, per_client=5, idle=0.01)
    with as_client("alice") as alice:
        await keep(initialize(alice), receive, send)
        await keep(initialize(alice), receive, send)
    with anyio.move_on_after(2):
        async with anyio.create_task_group() as group:
            group.start_soon(keep.sweep_forever)
            while len(audit.events) < 4:
                await anyio.sleep(0.05)
            group.cancel_scope.cancel()
    assert sorted(a for a, *_ in audit.events) == ["expired", "expired", "opened", "opened"]
    assert len(keep.table) == 0 and [s["method"] for s in sdk.scopes].count("DELETE") == 2


@pytest.mark.anyio
async def test_a_busy_client_is_refused_with_503_and_a_json_rpc_error() -> None:
    sdk = FakeSDK()
    keep, audit = keeper(sdk, per_client=1)
    with as_client("alice") as alice:
        await keep(initialize(alice), receive, send)
        keep.table.begin("s1", post=True)  # a call in flight on alice's one session
        sent: list[dict[str, Any]] = []

        async def collect(message: dict[str, Any]) -> None:
            sent.append(message)

        await keep(initialize(alice), receive, collect)
    assert sent[0]["status"] == 503 and b'"code":-32603' in sent[1]["body"]
    assert b"too many sessions for this client" in sent[1]["body"]
    assert audit.rejected == [
        ("initialize", "alice", "too many sessions for this client: every one is serving a request; retry shortly")
    ]
    assert len(sdk.scopes) == 1 and keep.table.get("s1") is not None


@pytest.mark.anyio
async def test_an_opening_cancelled_while_it_evicts_still_closes_and_gives_its_place_back() -> None:
    sdk = FakeSDK(delete_s=0.3)
    keep, audit = keeper(sdk, per_client=1)
    with as_client("alice") as alice:
        await keep(initialize(alice), receive, send)
        with anyio.move_on_after(0.05):  # the client leaves while its old session is being closed
            await keep(initialize(alice), receive, send)
    assert sdk.deleted == 1 and [a for a, *_ in audit.events] == ["opened", "evicted"]
    assert [scope["method"] for scope in sdk.scopes] == ["POST", "DELETE", "POST"]  # cancelled in the SDK
    assert len(keep.table) == 0 and keep.table.admit("alice").refused is None  # no place kept for it
