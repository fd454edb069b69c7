"""Spawn-to-`initialize`: how long a server takes from exec to answering an MCP host.

An MCP host starts a stdio server and sends `initialize` at once; nothing else
works until the reply. The bench does exactly that without the SDK client (so
its own imports and task groups are not in the figure): the clock starts right
before the process is spawned, the request is written into the pipe at once
(the server reads it when it is ready), and the clock stops when the reply's
line has been read. Then stdin is closed, which ends both servers, and the
process is waited for (bounded; killed if it does not exit).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path

import mcp_types

REPLY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 10.0
READ_CHUNK = 65536


def initialize_request() -> bytes:
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": mcp_types.LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "bastion-bench", "version": "0"},
        },
    }
    return json.dumps(request).encode() + b"\n"


def _read_line(fd: int, deadline: float) -> bytes:
    """The first line the server writes (its reply), bounded by `deadline`."""
    buffered = b""
    while b"\n" not in buffered:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("no reply to initialize in time")
        chunk = os.read(fd, READ_CHUNK)
        if not chunk:
            raise EOFError("the server closed stdout before replying to initialize")
        buffered += chunk
    return buffered.split(b"\n", 1)[0]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Close stdin (both servers exit on EOF) and reap it, killing it if it lingers."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(EXIT_TIMEOUT_S)
    if process.stdout is not None:
        process.stdout.close()


def spawn_to_initialize(argv: list[str], stderr_path: Path) -> float:
    """Seconds from spawning `argv` to reading its reply to `initialize`."""
    request = initialize_request()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # what the sessions give them
    with open(stderr_path, "a") as errlog:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, env=env)
        try:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(request)
            process.stdin.flush()
            line = _read_line(process.stdout.fileno(), time.monotonic() + REPLY_TIMEOUT_S)
            elapsed = time.perf_counter() - started
        finally:
            _stop(process)
    reply = json.loads(line)
    if reply.get("id") != 1 or "result" not in reply:
        raise RuntimeError(f"unexpected reply to initialize: {line[:200]!r}")
    return elapsed
