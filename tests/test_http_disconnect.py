"""An HTTP client that drops its connection mid-call (FIN or RST) ends the call (issue 21.5):
the worker is killed at once, not when it finishes, and the end record says `cancelled`,
never `ok` for a result nobody received. The server goes on serving."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path
from typing import Any

import httpx2
import psutil
import pytest

from broker.audit.verify import verify
from broker.transport.http_tokens import digest
from tests.conftest import read_audit, write_policy
from tests.test_http import INITIALIZE, TOKENS, Served, free_port
from tests.test_lifecycle import GREP_ONLY, SLOW_PATTERN

BASE = {
    "Authorization": f"Bearer {TOKENS['alice']}",
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
}


def open_session(url: str) -> dict[str, str]:
    opened = httpx2.post(url, headers=BASE, content=json.dumps(INITIALIZE), timeout=10)
    assert opened.status_code == 200, opened.text
    headers = {**BASE, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
    done = httpx2.post(
        url, headers=headers, content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}', timeout=10
    )
    assert done.status_code == 202
    return headers


def raw_post(port: int, headers: dict[str, str], body: bytes) -> socket.socket:
    """Send a POST on a socket of our own, and read until its response has begun."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def drop(sock: socket.socket, how: str) -> None:
    if how == "rst":  # SO_LINGER with a zero timeout: close() sends RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def events(audit: Path, name: str) -> list[dict[str, Any]]:
    return [r for r in read_audit(audit) if r["event"] == name] if audit.exists() else []


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_dropped_connection_cancels_the_call(tmp_path: Path, slow_log: Path, how: str) -> None:
    clients = f'[[http.clients]]\nname = "alice"\ntoken_sha256 = "{digest(TOKENS["alice"])}"\n'
    policy = write_policy(tmp_path, [slow_log], toml=GREP_ONLY + clients, timeout_s=60)
    audit = tmp_path / "audit.jsonl"
    served = Served(policy, free_port())
    try:
        headers = open_session(served.url)
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {
                "name": "query_logs",
                "arguments": {"log_path": str(slow_log), "pattern": SLOW_PATTERN, "max_lines": 5},
            },
        }
        sock = raw_post(served.port, headers, json.dumps(call).encode())
        server = psutil.Process(served.proc.pid)
        wait_for(
            lambda: events(audit, "begin") and len(server.children(recursive=True)) >= 2, 20, "the call never started"
        )
        time.sleep(0.5)  # well inside the call, which takes seconds
        dropped = time.monotonic()
        drop(sock, how)
        wait_for(lambda: events(audit, "end"), 10, "no end record")
        (end,) = events(audit, "end")
        assert end["outcome"] == "cancelled" and end["success"] is False and end["client"] == "alice", end
        assert time.monotonic() - dropped < 5  # not when the worker would have finished
        wait_for(
            lambda: (
                not psutil.pid_exists(end["worker_pid"])
                or psutil.Process(end["worker_pid"]).status() == psutil.STATUS_ZOMBIE
            ),
            5,
            "the worker is still running",
        )
        # Still serving, in the same session.
        again = httpx2.post(
            served.url,
            headers=headers,
            timeout=30,
            content=json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 3,
                    "method": "tools/call",
                    "params": {"name": "query_logs", "arguments": {"log_path": str(slow_log), "pattern": "^zzz"}},
                }
            ),
        )
        assert again.status_code == 200 and '"isError":false' in again.text.replace(" ", "")
        code, stderr = served.stop()
        assert code == 0, stderr
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait(timeout=10)
    assert verify([str(audit)]).problem is None
    assert [r["outcome"] for r in events(audit, "end")] == ["cancelled", "ok"]
