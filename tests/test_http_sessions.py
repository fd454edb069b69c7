"""HTTP sessions cannot exhaust the server: `bastion serve --http` on loopback with the SDK's
own client and raw requests. Hosts that never DELETE their session (the Inspector, the
TypeScript SDK) lose their oldest sessions to their own newer ones, idle sessions expire
([http] session_idle_timeout_s) and answer 404, and no client can lock out another."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from broker.audit.verify import verify
from broker.transport.http_sessions import sid_digest
from broker.transport.http_tokens import digest
from tests.conftest import read_audit, write_policy
from tests.test_http import AUTH, TOKENS, Served, free_port, http_policy, post

PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}


def serve(tmp_path: Path, http: str = "") -> Served:
    return Served(http_policy(tmp_path, f"[http]\n{http}\n" if http else ""), free_port())


def open_raw(server: Served, client: str) -> str:
    """A session opened by a bare initialize, then forgotten (no DELETE)."""
    response = post(server.url, {"Authorization": f"Bearer {TOKENS[client]}"})
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def ping(server: Served, client: str, session_id: str) -> int:
    headers = {
        "Authorization": f"Bearer {TOKENS[client]}",
        "Mcp-Session-Id": session_id,
        "Mcp-Protocol-Version": "2025-06-18",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    return httpx2.post(server.url, headers=headers, content=json.dumps(PING), timeout=10).status_code


def session_records(tmp_path: Path) -> list[dict[str, Any]]:
    return [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "session"]


def stopped(server: Served, tmp_path: Path) -> list[dict[str, Any]]:
    code, stderr = server.stop()
    assert code == 0, stderr
    assert verify([str(tmp_path / "audit.jsonl")]).problem is None
    return session_records(tmp_path)


async def connect_and_forget(url: str, token: str) -> None:
    """What the Inspector does: initialize, use the session, go away without DELETE."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    transport = streamable_http_client(url, http_client=http, terminate_on_close=False)
    async with http, Client(transport, mode="legacy", read_timeout_seconds=30) as client:
        assert [tool.name for tool in (await client.list_tools()).tools] == ["list_logs", "query_logs"]


@pytest.mark.anyio
async def test_a_hundred_forgotten_sessions_of_one_token_leave_another_token_served(tmp_path: Path) -> None:
    server = serve(tmp_path)  # the defaults: max_sessions 32, max_sessions_per_client 8
    try:
        with anyio.fail_after(180):
            for _ in range(100):
                await connect_and_forget(server.url, TOKENS["alice"])
            http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKENS['bob']}"})
            async with http, Client(streamable_http_client(server.url, http_client=http), mode="legacy") as bob:
                result = await bob.call_tool("query_logs", {"log_path": str(AUTH), "pattern": "sshd", "max_lines": 1})
        assert not result.is_error and result.structured_content is not None
        assert len(result.structured_content["lines"]) == 1
    finally:
        records = stopped(server, tmp_path)
    counts = Counter((r["client"], r["action"], r.get("cap")) for r in records)
    assert counts == {
        ("alice", "opened", None): 100,
        ("alice", "evicted", "max_sessions_per_client"): 92,  # alice keeps her newest 8
        ("bob", "opened", None): 1,
        ("bob", "closed", None): 1,  # the SDK client's DELETE on exit
    }
    assert not [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "rejected"]


def test_the_per_client_cap_closes_that_clients_least_recently_used_session(tmp_path: Path) -> None:
    server = serve(tmp_path, "max_sessions_per_client = 2")
    try:
        bob = open_raw(server, "bob")
        first, second = open_raw(server, "alice"), open_raw(server, "alice")
        assert ping(server, "alice", first) == 200  # first is now used more recently than second
        third = open_raw(server, "alice")
        assert [ping(server, "alice", sid) for sid in (first, second, third)] == [200, 404, 200]
        assert ping(server, "bob", bob) == 200
        fourth = open_raw(server, "alice")
        assert [ping(server, "alice", sid) for sid in (first, third, fourth)] == [404, 200, 200]
    finally:
        records = stopped(server, tmp_path)
    evicted = [(r["client"], r["sid_sha256"], r["cap"]) for r in records if r["action"] == "evicted"]
    assert evicted == [
        ("alice", sid_digest(second), "max_sessions_per_client"),
        ("alice", sid_digest(first), "max_sessions_per_client"),
    ]
    assert all(sid not in json.dumps(records) for sid in (first, second, third, fourth, bob))


def test_the_global_cap_takes_from_the_client_holding_most_and_never_refuses_another(tmp_path: Path) -> None:
    server = serve(tmp_path, "max_sessions = 3\nmax_sessions_per_client = 3")
    try:
        alice = [open_raw(server, "alice") for _ in range(3)]
        bob = open_raw(server, "bob")  # the server is full of alice's sessions: one of them goes
        assert ping(server, "bob", bob) == 200
        assert [ping(server, "alice", sid) for sid in alice] == [404, 200, 200]
        again = open_raw(server, "bob")  # alice still holds most: her next oldest goes
        assert [ping(server, "alice", sid) for sid in alice[1:]] == [404, 200]
        assert ping(server, "bob", bob) == ping(server, "bob", again) == 200
    finally:
        records = stopped(server, tmp_path)
    caps = [(r["client"], r["cap"]) for r in records if r["action"] == "evicted"]
    assert caps == [("alice", "max_sessions"), ("alice", "max_sessions")]


def test_an_idle_session_expires_answers_404_and_a_new_one_can_be_opened(tmp_path: Path) -> None:
    server = serve(tmp_path, "session_idle_timeout_s = 1")
    try:
        kept, idle = open_raw(server, "alice"), open_raw(server, "alice")
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # requests every 0.3 s hold a session open past its 1 s
            assert ping(server, "alice", kept) == 200
            time.sleep(0.3)
        assert ping(server, "alice", idle) == 404
        expired = [r for r in session_records(tmp_path) if r["action"] == "expired"]
        assert [r["sid_sha256"] for r in expired] == [sid_digest(idle)]
        deadline = time.monotonic() + 15  # then, left alone, the other one goes too
        while len(expired) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            expired = [r for r in session_records(tmp_path) if r["action"] == "expired"]
        assert [r["sid_sha256"] for r in expired] == [sid_digest(idle), sid_digest(kept)]
        assert ping(server, "alice", kept) == 404
        assert ping(server, "alice", open_raw(server, "alice")) == 200
    finally:
        records = stopped(server, tmp_path)
    assert Counter(r["action"] for r in records) == {"opened": 3, "expired": 2}


def test_another_token_cannot_use_or_disturb_a_session(tmp_path: Path) -> None:
    server = serve(tmp_path)
    try:
        alice = open_raw(server, "alice")
        assert ping(server, "bob", alice) == 404  # as if it did not exist
        headers = {"Authorization": f"Bearer {TOKENS['bob']}", "Mcp-Session-Id": alice}
        assert httpx2.delete(server.url, headers=headers, timeout=10).status_code == 404
        assert ping(server, "alice", alice) == 200
    finally:
        records = stopped(server, tmp_path)
    assert [(r["client"], r["action"]) for r in records] == [("alice", "opened")]


@pytest.mark.anyio
async def test_a_client_whose_every_session_is_busy_gets_503_and_others_are_served(tmp_path: Path) -> None:
    slow = tmp_path / "slow.log"
    rng = random.Random(5)
    slow.write_text("".join("".join(rng.choice("ab") for _ in range(66)) + "\n" for _ in range(60_000)))
    clients = "".join(
        f'[[http.clients]]\nname = "{n}"\ntoken_sha256 = "{digest(TOKENS[n])}"\n\n' for n in ("alice", "bob")
    )
    toml = clients + "[http]\nmax_sessions_per_client = 1\n"
    server = Served(write_policy(tmp_path, [slow], toml=toml, timeout_s=30), free_port())
    try:
        refused, bob = await _open_while_busy(server, slow, tmp_path)
        assert refused.status_code == 503 and "mcp-session-id" not in refused.headers
        error = refused.json()["error"]
        assert error["message"].startswith("too many sessions for this client") and str(tmp_path) not in refused.text
        assert bob.status_code == 200
    finally:
        records = stopped(server, tmp_path)
    assert [(r["client"], r["action"]) for r in records][:2] == [("alice", "opened"), ("bob", "opened")]
    rejected = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "rejected"]
    assert [(r["client"], r["method"]) for r in rejected] == [("alice", "initialize")]


async def _open_while_busy(server: Served, slow: Path, tmp_path: Path) -> tuple[httpx2.Response, httpx2.Response]:
    """alice's one session serves a slow call; meanwhile alice, then bob, initialize."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    async with http, Client(streamable_http_client(server.url, http_client=http), mode="legacy") as alice:
        async with anyio.create_task_group() as group:
            group.start_soon(alice.call_tool, "query_logs", {"log_path": str(slow), "pattern": "[ab]*a[ab]{16}c"})
            with anyio.fail_after(20):
                while not [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "begin"]:
                    await anyio.sleep(0.05)
            refused = await anyio.to_thread.run_sync(post, server.url, {"Authorization": f"Bearer {TOKENS['alice']}"})
            bob = await anyio.to_thread.run_sync(post, server.url, {"Authorization": f"Bearer {TOKENS['bob']}"})
            group.cancel_scope.cancel()  # alice goes away: her call is cancelled
    return refused, bob
