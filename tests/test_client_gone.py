"""A stdio client that disappears is a stop, not a failure (issue 21.4): whether it is
SIGKILLed mid-call or closes its end of the server's stdout while keeping stdin open, the
call in flight ends `cancelled`, the server writes `server_stop` with reason
`client gone`, exits 0 without "refusing to serve", leaves no worker, and the audit chain
verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from broker.audit.verify import verify
from broker.transport.stdio import Wire
from tests.conftest import BASTION, read_audit, write_policy
from tests.test_lifecycle import GREP_ONLY, SLOW_PATTERN

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}

# The client: starts the server behind a small waiter (which records the server's exit
# status: the client will not live to see it), opens the session, starts a slow call,
# prints the waiter's pid, then waits to be killed.
CLIENT = r"""
import subprocess, sys, time
rc_file, stderr, initialize, call, *server = sys.argv[1:]
waiter = "import subprocess, sys; rc = subprocess.call(sys.argv[2:]); open(sys.argv[1], 'w').write(str(rc))"
stderr = subprocess.PIPE if stderr == "pipe" else None  # "pipe": the client holds the server's stderr too
proc = subprocess.Popen(
    [sys.executable, "-c", waiter, rc_file, *server], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
)
def send(text):
    proc.stdin.write(text.encode() + b"\n")
    proc.stdin.flush()
send(initialize)
proc.stdout.readline()
send('{"jsonrpc": "2.0", "method": "notifications/initialized"}')
send(call)
print(proc.pid, flush=True)
time.sleep(120)
"""
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def call_line(log: Path, request_id: int = 2) -> str:
    arguments = {"log_path": str(log), "pattern": SLOW_PATTERN, "max_lines": 5}
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "query_logs", "arguments": arguments},
        }
    )


def wait_in_flight(audit: Path, server: psutil.Process, timeout_s: float = 30) -> list[psutil.Process]:
    """Once the call's begin is written and its worker runs: the server's whole process tree."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        begun = audit.exists() and any(r["event"] == "begin" for r in read_audit(audit))
        tree = server.children(recursive=True)
        if begun and tree:
            time.sleep(0.5)  # well inside the call, which takes seconds
            return [server, *server.children(recursive=True)]
        time.sleep(0.05)
    raise TimeoutError("the call never started")


def wait_gone(processes: list[psutil.Process], timeout_s: float = 20) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def assert_stopped_because_the_client_went(audit: Path, stderr: str) -> None:
    records = read_audit(audit)
    (end,) = [r for r in records if r["event"] == "end"]
    assert end["outcome"] == "cancelled", end
    assert records[-1]["event"] == "server_stop" and records[-1]["reason"] == "client gone", records[-1]
    assert verify([str(audit)]).problem is None
    assert "refusing to serve" not in stderr and "Broken pipe" not in stderr, stderr


@pytest.mark.parametrize("stderr", ["file", "pipe"])
def test_a_sigkilled_client_is_a_stop(tmp_path: Path, slow_log: Path, stderr: str) -> None:
    policy = write_policy(tmp_path, [slow_log], toml=GREP_ONLY, timeout_s=60)
    audit, rc_file, stderr_file = tmp_path / "audit.jsonl", tmp_path / "rc", tmp_path / "stderr"
    with stderr_file.open("wb") as err:
        client = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLIENT,
                str(rc_file),
                stderr,
                json.dumps(INITIALIZE),
                call_line(slow_log),
                str(BASTION),
                "serve",
                "--policy",
                str(policy),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            env=ENV,
        )
    try:
        assert client.stdout is not None
        waiter = psutil.Process(int(client.stdout.readline()))
        (server,) = waiter.children()
        tree = wait_in_flight(audit, server)
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        assert wait_gone(tree) == []
        deadline = time.monotonic() + 10
        # open() creates the file before write() fills it: wait for its content, not its existence
        while not (rc_file.exists() and rc_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rc_file.read_text() == "0"  # 120 if Python could not flush a stderr nobody reads
    finally:
        if client.poll() is None:
            client.kill()
    assert_stopped_because_the_client_went(audit, stderr_file.read_text())


@pytest.mark.parametrize("when", ["mid-call", "then-a-call"])
def test_a_client_that_stops_reading_is_a_stop(tmp_path: Path, slow_log: Path, when: str) -> None:
    """It closes its end of the server's stdout and keeps stdin open."""
    policy = write_policy(tmp_path, [slow_log], toml=GREP_ONLY, timeout_s=60)
    audit, stderr = tmp_path / "audit.jsonl", tmp_path / "stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [str(BASTION), "serve", "--policy", str(policy)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=ENV,
        )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        server = psutil.Process(proc.pid)
        proc.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        proc.stdin.flush()
        assert b'"result"' in proc.stdout.readline()
        proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        if when == "mid-call":
            proc.stdin.write(call_line(slow_log).encode() + b"\n")
            proc.stdin.flush()
            tree = wait_in_flight(audit, server)
            proc.stdout.close()
        else:
            proc.stdin.flush()
            tree = [server, *server.children(recursive=True)]
            proc.stdout.close()
            try:  # the server may already have stopped: nobody could read its answer
                proc.stdin.write(call_line(slow_log).encode() + b"\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass
        assert proc.wait(timeout=20) == 0
        assert wait_gone(tree) == []
    finally:
        if proc.poll() is None:
            proc.kill()
    records = read_audit(audit)
    begins = [r["seq"] for r in records if r["event"] == "begin"]
    ends = [r for r in records if r["event"] == "end"]
    if when == "then-a-call" and not begins:  # the server stopped before it read the call
        assert records[-1]["event"] == "server_stop" and records[-1]["reason"] == "client gone", records[-1]
        assert verify([str(audit)]).problem is None
        return
    assert sorted(begins) == sorted(r["call"] for r in ends)
    assert_stopped_because_the_client_went(audit, stderr.read_text())


# --- the wire itself ---------------------------------------------------------------


@pytest.fixture
def pipe() -> Any:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.mark.anyio
async def test_a_write_nobody_can_read_marks_the_wire_gone(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    wire = Wire(write_end)
    try:
        os.close(read_end)
        assert wire.reader_gone()
        await wire.write_line(b'{"jsonrpc": "2.0"}\n')  # EPIPE: no exception, and a stop
        assert wire.gone.is_set()
    finally:
        wire.close()


@pytest.mark.anyio
async def test_the_wire_notices_a_reader_that_closes_without_a_write(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    wire = Wire(write_end)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(wire.watch)
            await anyio.sleep(0.2)
            assert not wire.gone.is_set() and not wire.reader_gone()
            os.close(read_end)
            with anyio.fail_after(5):
                await wire.gone.wait()
    finally:
        wire.close()


@pytest.mark.anyio
async def test_a_client_that_does_not_read_does_not_block_the_event_loop(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    wire = Wire(write_end)
    ticks = 0
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(wire.write_line, b"x" * (4 << 20) + b"\n")  # far more than a pipe holds
            with anyio.fail_after(5):
                while ticks < 20:
                    await anyio.sleep(0.01)
                    ticks += 1
            os.close(read_end)  # the write ends at once, as a stop
            with anyio.fail_after(5):
                await wire.gone.wait()
    finally:
        wire.close()


def test_stdin_from_dev_null_is_a_clean_stop(tmp_path: Path, slow_log: Path) -> None:
    """epoll cannot watch /dev/null (EPERM): it is read directly, and its end is a stop."""
    policy = write_policy(tmp_path, [slow_log])
    proc = subprocess.run(
        [str(BASTION), "serve", "--policy", str(policy)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr
    records = read_audit(tmp_path / "audit.jsonl")
    assert records[-1]["event"] == "server_stop" and records[-1]["reason"] == "stdin closed"
