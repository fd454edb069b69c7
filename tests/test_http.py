"""Streamable HTTP end to end: `bastion serve --http 127.0.0.1:PORT` with per-client
tokens, the SDK's own Streamable HTTP client, DNS-rebinding protection, per-client
rate limits, the audit naming the client, and a clean SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.oauth2 import TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from broker.audit.verify import verify
from broker.transport.http_auth import NO_OAUTH, STATIC_TOKEN
from broker.transport.http_tokens import digest
from tests.conftest import BASTION, SAMPLE_LOGS, read_audit, wait_no_workers, write_policy

AUTH = SAMPLE_LOGS / "auth.log"
TOKENS = {
    "alice": "bst_alice-token-for-tests-only",
    "bob": "bst_bob-token-for-tests-only",
    "mallory": "bst_revoked-token",
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_policy(tmp_path: Path, rate: str = "") -> Path:
    clients = "".join(
        f'[[http.clients]]\nname = "{name}"\ntoken_sha256 = "{digest(token)}"\n'
        + ("revoked = true\n" if name == "mallory" else "")
        + "\n"
        for name, token in TOKENS.items()
    )
    return write_policy(tmp_path, [AUTH], toml=clients + rate)


class Served:
    def __init__(self, policy: Path, port: int) -> None:
        self.port, self.url = port, f"http://127.0.0.1:{port}/mcp"
        self.proc = subprocess.Popen(
            [str(BASTION), "serve", "--policy", str(policy), "--http", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read().decode() if self.proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("the HTTP server did not start")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, stderr.decode(errors="replace")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(http_policy(tmp_path), free_port())
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=10)


@asynccontextmanager
async def http_client(url: str, token: str, **headers: str) -> AsyncIterator[Client]:
    client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}", **headers})
    async with client, Client(streamable_http_client(url, http_client=client), read_timeout_seconds=30) as mcp_client:
        yield mcp_client


def post(url: str, headers: dict[str, str]) -> httpx2.Response:
    base = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    return httpx2.post(url, headers={**base, **headers}, content=json.dumps(INITIALIZE), timeout=10)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token"}, 401),
        ({"Authorization": f"Bearer {TOKENS['mallory']}"}, 401),  # revoked in the policy
        ({"Authorization": f"Basic {TOKENS['alice']}"}, 401),
        ({"Authorization": f"Bearer {TOKENS['alice']}", "Host": "evil.example:80"}, 421),
        ({"Authorization": f"Bearer {TOKENS['alice']}", "Origin": "http://evil.example"}, 403),
    ],
    ids=["no-token", "wrong-token", "revoked-token", "not-bearer", "forged-host", "forged-origin"],
)
def test_refused_requests(served: Served, headers: dict[str, str], status: int) -> None:
    response = post(served.url, headers)
    assert response.status_code == status, response.text
    if status == 401:
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="bastion", ') and f'error_description="{STATIC_TOKEN}"' in challenge
        # RFC 6750 3.1: an error code only when credentials were presented.
        assert ('error="invalid_token"' in challenge) == ("Authorization" in headers)
        assert "resource_metadata" not in challenge  # nothing to discover
        assert response.json() == {"error": "invalid_token", "error_description": STATIC_TOKEN}
    assert TOKENS["alice"] not in response.text


OAUTH_DISCOVERY = [
    "/.well-known/oauth-protected-resource",  # RFC 9728, at the root
    "/.well-known/oauth-protected-resource/mcp",  # ... and for the /mcp path
    "/.well-known/oauth-authorization-server",  # RFC 8414
    "/.well-known/oauth-authorization-server/mcp",
    "/.well-known/openid-configuration",  # OpenID Connect discovery
]


@pytest.mark.parametrize("path", OAUTH_DISCOVERY)
@pytest.mark.parametrize("token", [None, TOKENS["alice"], "wrong"], ids=["no-token", "good-token", "wrong-token"])
def test_oauth_discovery_answers_404_not_401(served: Served, path: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for method in ("GET", "POST"):
        response = httpx2.request(method, f"http://127.0.0.1:{served.port}{path}", headers=headers, timeout=10)
        assert response.status_code == 404, (method, response.text)
        assert response.json() == {"error": "not_found", "error_description": NO_OAUTH}
        assert "www-authenticate" not in response.headers


class _NoTokens(TokenStorage):
    async def get_tokens(self) -> OAuthToken | None:
        return None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        raise AssertionError("no token can come from a server without OAuth")

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        raise AssertionError("no client can be registered with a server without OAuth")


@pytest.mark.anyio
async def test_a_host_that_tries_oauth_first_stops_cleanly(served: Served) -> None:
    """The SDK's own OAuth client, as a host that tries OAuth before anything else: its
    discovery meets 404s, its registration fails, and no browser is ever sent anywhere."""
    seen: list[tuple[str, str, int]] = []
    redirected: list[str] = []

    async def record(response: httpx2.Response) -> None:
        seen.append((response.request.method, response.request.url.path, response.status_code))

    async def redirect(url: str) -> None:
        redirected.append(url)

    oauth = OAuthClientProvider(
        served.url,
        OAuthClientMetadata(redirect_uris=["http://127.0.0.1:1/callback"]),
        _NoTokens(),
        redirect_handler=redirect,
    )
    client = create_mcp_http_client(auth=oauth)
    client.event_hooks["response"].append(record)
    with anyio.fail_after(30):
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the SDK raises, it must raise
            async with client, Client(streamable_http_client(served.url, http_client=client), read_timeout_seconds=10):
                pass
    assert redirected == []
    assert seen[0] == ("POST", "/mcp", 401)
    discovery = [(path, status) for _, path, status in seen if path.startswith("/.well-known/")]
    assert discovery and all(status == 404 for _, status in discovery), seen
    assert len(seen) < 20, seen  # a few probes, no loop


def test_a_good_token_is_accepted_at_the_http_level(served: Served) -> None:
    response = post(served.url, {"Authorization": f"Bearer {TOKENS['alice']}"})
    assert response.status_code == 200, response.text


@pytest.mark.anyio
async def test_tools_work_and_the_audit_names_the_client(tmp_path: Path, served: Served) -> None:
    async with http_client(served.url, TOKENS["alice"]) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        result = await client.call_tool(
            "query_logs", {"log_path": str(AUTH), "pattern": "Accepted password for deploy", "max_lines": 2}
        )
        resource = await client.read_resource(f"file://{AUTH}")
        listed = await client.call_tool("list_logs", {})
        completed = await client.complete(
            types.PromptReference(name="triage_auth_failures"), {"name": "log_path", "value": str(AUTH)}
        )
    assert tools == ["list_logs", "query_logs"] and not result.is_error and resource.contents
    assert not listed.is_error and str(AUTH) in completed.completion.values
    code, stderr = served.stop()
    assert code == 0, stderr
    records = read_audit(tmp_path / "audit.jsonl")
    ends = [r for r in records if r["event"] == "end"]
    assert [(r["client"], r["tool"]) for r in ends] == [
        ("alice", "query_logs"),
        ("alice", "resources/read"),
        ("alice", "list_logs"),
        ("alice", "completion/complete"),
    ]
    text = (tmp_path / "audit.jsonl").read_text()
    assert all(token not in text and digest(token) not in text for token in TOKENS.values())
    assert records[0]["transport"].startswith("http ") and records[-1]["reason"] == "SIGTERM"
    assert verify([str(tmp_path / "audit.jsonl")]).problem is None
    assert wait_no_workers() == []


@pytest.mark.anyio
async def test_two_clients_are_rate_limited_separately(tmp_path: Path) -> None:
    rate = "[rate_limit]\ncalls = 2\nwindow_s = 60\nglobal_calls = 100\nglobal_window_s = 60\n"
    server = Served(http_policy(tmp_path, rate), free_port())
    try:
        args = {"log_path": str(AUTH), "pattern": "sshd", "max_lines": 1}
        async with http_client(server.url, TOKENS["alice"]) as alice, http_client(server.url, TOKENS["bob"]) as bob:
            alice_results = [await alice.call_tool("query_logs", args) for _ in range(3)]
            bob_result = await bob.call_tool("query_logs", args)
        assert [r.is_error for r in alice_results] == [False, False, True]
        assert "retry_after_s=" in alice_results[-1].content[0].text
        assert not bob_result.is_error
    finally:
        code, stderr = server.stop()
    assert code == 0, stderr
    outcomes = [(r["client"], r["outcome"]) for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"]
    assert outcomes == [("alice", "ok"), ("alice", "ok"), ("alice", "denied_rate"), ("bob", "ok")]


@pytest.mark.anyio
async def test_sigterm_with_a_call_in_flight_drains_and_exits_cleanly(tmp_path: Path) -> None:
    import random

    slow = tmp_path / "slow.log"
    rng = random.Random(5)
    slow.write_text("".join("".join(rng.choice("ab") for _ in range(66)) + "\n" for _ in range(60_000)))
    clients = "".join(
        f'[[http.clients]]\nname = "{n}"\ntoken_sha256 = "{digest(t)}"\n\n' for n, t in TOKENS.items() if n != "mallory"
    )
    policy = write_policy(tmp_path, [slow], toml=clients, timeout_s=60)
    server = Served(policy, free_port())
    replies: list[Any] = []
    try:
        await _call_then_sigterm(server, slow, tmp_path, replies)
    except Exception:  # noqa: BLE001 - the client may see the connection drop as the server stops
        pass
    finally:
        code, stderr = server.stop()
    assert code == 0, stderr
    records = read_audit(tmp_path / "audit.jsonl")
    (end,) = [r for r in records if r["event"] == "end"]
    assert end["outcome"] in ("cancelled", "ok") and end["client"] == "alice"
    assert records[-1]["event"] == "server_stop" and records[-1]["reason"] == "SIGTERM"
    assert verify([str(tmp_path / "audit.jsonl")]).problem is None
    assert wait_no_workers() == []


async def _call_then_sigterm(server: Served, slow: Path, tmp_path: Path, replies: list[Any]) -> None:
    async with http_client(server.url, TOKENS["alice"]) as client:
        async with anyio.create_task_group() as group:

            async def slow_call() -> None:
                try:
                    replies.append(
                        await client.call_tool("query_logs", {"log_path": str(slow), "pattern": "[ab]*a[ab]{16}c"})
                    )
                except Exception as exc:  # noqa: BLE001 - the server went away: acceptable for the client
                    replies.append(exc)

            group.start_soon(slow_call)
            with anyio.fail_after(20):
                while not [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "begin"]:
                    await anyio.sleep(0.05)
            await anyio.sleep(0.5)
            server.proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(40):
                while server.proc.poll() is None:
                    await anyio.sleep(0.1)


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("0.0.0.0:8765", "not loopback"),
        ("localhost:8765", "IP address"),
        ("127.0.0.1:99999", "HOST:PORT"),
        ("unix:relative.sock", "absolute path"),
    ],
)
def test_refused_bind_addresses(tmp_path: Path, address: str, needle: str) -> None:
    proc = subprocess.run(
        [str(BASTION), "serve", "--policy", str(http_policy(tmp_path)), "--http", address],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and needle in proc.stderr and proc.stdout == ""


def test_http_without_clients_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(BASTION), "serve", "--policy", str(write_policy(tmp_path, [AUTH])), "--http", "127.0.0.1:8765"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and "[[http.clients]]" in proc.stderr


def test_token_new_prints_a_token_and_its_policy_lines() -> None:
    proc = subprocess.run([str(BASTION), "token", "new", "analyst-7"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    token = next(line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("bst_"))
    assert f'token_sha256 = "{digest(token)}"' in proc.stdout and 'name = "analyst-7"' in proc.stdout
    bad = subprocess.run([str(BASTION), "token", "new", "../evil"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2


def test_unix_socket_serves_with_tokens_and_is_not_world_accessible(tmp_path: Path) -> None:
    sock = tmp_path / "mcp.sock"
    proc = subprocess.Popen(
        [str(BASTION), "serve", "--policy", str(http_policy(tmp_path)), "--http", f"unix:{sock}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (sock.exists() and sock.stat().st_mode & 0o777 == 0o660) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.stat().st_mode & 0o777 == 0o660
        transport = httpx2.HTTPTransport(uds=str(sock))
        with httpx2.Client(transport=transport, base_url="http://127.0.0.1:8765") as client:
            base = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
            denied = client.post("/mcp", headers=base, content=json.dumps(INITIALIZE))
            allowed = client.post(
                "/mcp", headers={**base, "Authorization": f"Bearer {TOKENS['bob']}"}, content=json.dumps(INITIALIZE)
            )
        assert denied.status_code == 401 and allowed.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
