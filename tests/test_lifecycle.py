"""A real `bastion serve` under stress: calls cancelled by the client, a
sandboxed worker killed mid-call, SIGTERM and a closed stdin with calls in
flight, and a bounded load test. After each: every begin has its end, the
chain verifies, and no worker process is left."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from broker.audit.verify import verify
from tests.conftest import (
    BASTION,
    bastion_client,
    read_audit,
    serve_process,
    wait_no_workers,
    worker_processes,
    write_policy,
)

SLOW_PATTERN = "[ab]*a[ab]{16}c"  # DFA-heavy for GNU grep in the C locale: about 0.6 s per MB
GREP_ONLY = '[search]\nengine = "grep"\n'  # ripgrep runs SLOW_PATTERN too fast to catch a call in flight
NO_RATE_LIMIT = "[rate_limit]\ncalls = 100000\nwindow_s = 1\nglobal_calls = 100000\nglobal_window_s = 1\n"


def call_records(audit: Path) -> Counter[str]:
    return Counter(record["event"] for record in read_audit(audit))


def assert_clean(audit: Path) -> list[dict[str, Any]]:
    """Every begin has an end, the chain verifies, no worker is left."""
    records = read_audit(audit)
    begins = [r["seq"] for r in records if r["event"] == "begin"]
    ended = [r["call"] for r in records if r["event"] == "end"]
    assert sorted(begins) == sorted(ended)
    follows = {r["call"]: r["seq"] for r in records if r["event"] == "end" and r.get("worker_exit") == "follows"}
    exits = {r["call"]: r["seq"] for r in records if r["event"] == "worker_exit"}
    assert exits.keys() == follows.keys() and all(exits[call] > follows[call] for call in follows)
    report = verify([str(audit)])
    assert report.problem is None, report.problem
    assert wait_no_workers() == []
    return records


# --- raw JSON-RPC over stdio, to control signals and stdin precisely -------------------


class RawServer:
    def __init__(self, policy: Path, extra_args: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [str(BASTION), "serve", "--policy", str(policy), *(extra_args or [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
        self.proc.stdin.flush()

    def receive(self, request_id: int, timeout_s: float = 30) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    message = json.loads(line)
                    if message.get("id") == request_id:
                        return message
                if selector.select(timeout=0.1):
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                    assert chunk, "the server closed stdout"
                    self._buffer += chunk
        raise TimeoutError(f"no response to request {request_id}")

    def initialize(self) -> None:
        self.send(
            {
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "1"},
                },
            }
        )
        assert "result" in self.receive(1)
        self.send({"method": "notifications/initialized"})

    def start_call(self, request_id: int, log: Path) -> None:
        arguments = {"log_path": str(log), "pattern": SLOW_PATTERN, "max_lines": 5}
        self.send({"id": request_id, "method": "tools/call", "params": {"name": "query_logs", "arguments": arguments}})

    def wait_exit(self, timeout_s: float = 30) -> tuple[int, str]:
        self.proc.wait(timeout=timeout_s)
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read().decode(errors="replace")

    def close_stdin_and_wait(self) -> tuple[int, str]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.wait_exit()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:  # a failed assertion must not leave a server running
            self.proc.kill()
            self.proc.wait()


def wait_for_call_in_flight(audit: Path, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if audit.exists() and call_records(audit)["begin"] >= 1 and len(worker_processes()) >= 2:
            time.sleep(0.5)  # well inside the call, which takes seconds
            return
        time.sleep(0.05)
    raise TimeoutError("the call never started")


def wait_for_worker_exit(audit: Path, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(r["event"] == "worker_exit" for r in read_audit(audit)):
            return
        time.sleep(0.02)
    raise TimeoutError("no worker_exit record")


@pytest.mark.parametrize("stop", ["SIGTERM", "stdin_closed"])
def test_stopping_with_a_call_in_flight(tmp_path: Path, slow_log: Path, stop: str) -> None:
    policy = write_policy(tmp_path, [slow_log], toml=GREP_ONLY, timeout_s=60)
    audit = tmp_path / "audit.jsonl"
    with RawServer(policy) as server:
        server.initialize()
        server.start_call(2, slow_log)
        wait_for_call_in_flight(audit)
        if stop == "SIGTERM":
            server.proc.send_signal(signal.SIGTERM)
            code, stderr = server.wait_exit()
        else:
            code, stderr = server.close_stdin_and_wait()
    assert code == 0, stderr
    records = assert_clean(audit)
    (end,) = [r for r in records if r["event"] == "end"]
    assert end["outcome"] == "cancelled" and end["signal"] == "SIGKILL"
    assert records[-1]["event"] == "server_stop"
    assert records[-1]["reason"] == ("SIGTERM" if stop == "SIGTERM" else "stdin closed")
    assert "audit log head: seq" in stderr


@pytest.mark.anyio
async def test_client_cancellation_kills_the_worker(tmp_path: Path, slow_log: Path) -> None:
    policy = write_policy(tmp_path, [slow_log, Path(__file__)], toml=GREP_ONLY, timeout_s=60)
    audit = tmp_path / "audit.jsonl"
    async with bastion_client(policy) as client:
        with anyio.move_on_after(2) as scope:  # abandoning the call sends notifications/cancelled
            await client.call_tool("query_logs", {"log_path": str(slow_log), "pattern": SLOW_PATTERN})
        assert scope.cancelled_caught
        with anyio.fail_after(20):
            while call_records(audit)["end"] < 1:
                await anyio.sleep(0.05)
        after = await client.call_tool("query_logs", {"log_path": str(Path(__file__)), "pattern": "cancelled"})
        assert not after.is_error
    records = assert_clean(audit)
    first_end = next(r for r in records if r["event"] == "end")
    assert first_end["outcome"] == "cancelled" and first_end["duration_ms"] < 20_000


@pytest.mark.anyio
async def test_a_sandboxed_worker_killed_mid_call(tmp_path: Path, slow_log: Path) -> None:
    policy = write_policy(tmp_path, [slow_log], toml=GREP_ONLY, timeout_s=60)
    audit = tmp_path / "audit.jsonl"
    replies: list[Any] = []
    async with bastion_client(policy) as client:
        async with anyio.create_task_group() as group:

            async def slow_call() -> None:
                replies.append(
                    await client.call_tool("query_logs", {"log_path": str(slow_log), "pattern": SLOW_PATTERN})
                )

            group.start_soon(slow_call)
            await anyio.to_thread.run_sync(wait_for_call_in_flight, audit)
            for proc in worker_processes():  # the busy one and the idle spares
                proc.send_signal(signal.SIGKILL)
        (reply,) = replies
        assert reply.is_error and "worker running this call failed" in reply.content[0].text
        again = await client.call_tool("query_logs", {"log_path": str(slow_log), "pattern": "^zzz", "max_lines": 1})
        assert not again.is_error
    records = assert_clean(audit)
    first_end = next(r for r in records if r["event"] == "end")
    assert first_end["outcome"] == "worker_crashed" and first_end["signal"] == "SIGKILL"


@pytest.mark.anyio
async def test_load_500_calls_at_concurrency_16(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("".join(f"line {n} sshd Failed password from 203.0.113.{n % 250}\n" for n in range(2000)))
    policy = write_policy(tmp_path, [log], toml=NO_RATE_LIMIT, max_queue=64)
    audit = tmp_path / "audit.jsonl"
    results: list[bool] = []
    async with bastion_client(policy, timeout_s=120) as client:

        async def caller(index: int) -> None:
            for n in range(index, 500, 16):
                reply = await client.call_tool(
                    "query_logs", {"log_path": str(log), "pattern": f"203\\.0\\.113\\.{n % 250}$", "max_lines": 10}
                )
                results.append(not reply.is_error and len(reply.structured_content["lines"]) >= 1)

        with anyio.fail_after(300):
            async with anyio.create_task_group() as group:
                for index in range(16):
                    group.start_soon(caller, index)
    assert len(results) == 500 and all(results)
    counts = call_records(audit)
    assert (counts["begin"], counts["end"]) == (500, 500)
    records = assert_clean(audit)
    ends = [r for r in records if r["event"] == "end"]
    assert all(r["outcome"] == "ok" for r in ends)
    fates = [r for r in records if r["event"] == "worker_exit"]
    assert len(fates) == 500 and all(r["stopped_after_reply"] and r["signal"] is None for r in fates)
    if os.geteuid() == 0:  # per-worker cgroups: the worker's own peak, below the maxrss it shares with the launcher
        assert all(0 < r["peak_memory_kb"] < r["max_rss_kb"] for r in fates)


@pytest.mark.anyio
async def test_audit_write_failure_refuses_calls_and_the_server_keeps_running(tmp_path: Path) -> None:
    """The broker's file size limit drops to the audit log's size: calls are refused with a safe
    error, nothing is half-written, and once the limit is lifted calls work again."""
    import psutil

    log = tmp_path / "auth.log"
    log.write_text("sshd Failed password for root\n")
    policy = write_policy(tmp_path, [log])
    audit = tmp_path / "audit.jsonl"
    args = {"log_path": str(log), "pattern": "Failed"}
    async with bastion_client(policy) as client:
        assert not (await client.call_tool("query_logs", args)).is_error
        await anyio.to_thread.run_sync(wait_for_worker_exit, audit)  # written ~20 ms after the reply
        server = serve_process()
        server.rlimit(psutil.RLIMIT_FSIZE, (audit.stat().st_size + 50, psutil.RLIM_INFINITY))
        refused = await client.call_tool("query_logs", args)
        assert (
            refused.is_error
            and refused.content[0].text == "refused: the audit log cannot be written, so no call can run"
        )
        assert (await client.list_tools()).tools  # still serving
        assert verify([str(audit)]).problem is None  # no torn line
        server.rlimit(psutil.RLIMIT_FSIZE, (psutil.RLIM_INFINITY, psutil.RLIM_INFINITY))
        assert not (await client.call_tool("query_logs", args)).is_error
    records = assert_clean(audit)
    assert [r["outcome"] for r in records if r["event"] == "end"] == ["ok", "ok"]


def test_a_stop_the_audit_log_cannot_record_is_said_so_not_called_a_refusal(tmp_path: Path) -> None:
    """stdin closes while the audit log takes nothing more: the server still stops (exit 1,
    not 3), says server_stop is missing, and leaves no torn line."""
    import psutil

    policy = write_policy(tmp_path, [tmp_path / "auth.log"])
    audit = tmp_path / "audit.jsonl"
    with RawServer(policy) as server:
        server.initialize()
        psutil.Process(server.proc.pid).rlimit(psutil.RLIMIT_FSIZE, (audit.stat().st_size, psutil.RLIM_INFINITY))
        code, stderr = server.close_stdin_and_wait()
    assert code == 1, stderr
    assert "stopped (stdin closed), but the audit log could not record server_stop" in stderr
    assert "refusing to serve" not in stderr
    assert read_audit(audit)[-1]["event"] == "server_start"
    assert verify([str(audit)]).problem is None
