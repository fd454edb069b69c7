"""Faults of a worker, seen through the broker's real request path.

A stand-in worker process (FAKE_WORKER below) receives the real request
frame and descriptor over the real socket, then misbehaves in one way. The
Bastion service must answer each call with a clean error (no internals),
write a matching `end` record, kill and reap the process, and keep serving.
Also here: rate limits, the busy queue and cancellation, with the same
stand-ins so the timing is under the test's control.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from broker.audit.log import AuditLog
from broker.audit.verify import verify
from broker.calls import Bastion
from broker.policy import load_policy
from broker.pool.worker_process import Worker
from broker.sandbox.cgroup import CgroupHost
from tests.conftest import ROOT, read_audit, write_policy

NO_CGROUPS = CgroupHost("", (), "stand-in workers have none")

pytestmark = pytest.mark.anyio

FAKE_WORKER = r"""
import os, signal, socket, struct, sys, time
sys.path.insert(0, sys.argv[3])
from bastion_wire.protocol import Done, Failed, Line, Lines, Progress, Ready, encode_frame
sock = socket.socket(fileno=int(sys.argv[1]))
mode = sys.argv[2]
socket.recv_fds(sock, 1 << 20, 4)  # the request frame and the log descriptor
def send(data):
    sock.sendall(data)
lines = Lines(lines=[Line(line_no=1, text="first matching line")])
if mode == "ok":
    send(encode_frame(lines) + encode_frame(Done(more=False)))
elif mode == "hang":
    time.sleep(3600)
elif mode == "silent_exit":
    os._exit(0)
elif mode == "garbage":
    send(b"\xff\xfe\x00\x01garbage that is not a frame" * 4)
    time.sleep(3600)
elif mode == "truncated":
    send(encode_frame(lines)[:-5])
    os._exit(0)
elif mode == "oversized":
    send(struct.pack(">I", 64 << 20) + b"x" * 1000)
    time.sleep(3600)
elif mode == "wrong_frame":
    send(encode_frame(Ready(version=1, layers=[])))
    time.sleep(3600)
elif mode == "flood":
    while True:
        send(encode_frame(Lines(lines=[Line(line_no=n, text="y" * 1000) for n in range(1, 100)])))
elif mode == "killed_mid_call":
    send(encode_frame(lines))
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "outer_killed":  # like a monitor killed while its PID 1 still holds the channel
    if os.fork() == 0:
        time.sleep(3600)
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "killed_after_reply":
    send(encode_frame(lines) + encode_frame(Done(more=False)))
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "sigsys":
    os.kill(os.getpid(), signal.SIGSYS)
elif mode == "progress_flood":  # a hostile worker: progress frames as fast as it can write them
    for n in range(1, 10_000_000):
        send(encode_frame(Progress(scanned=n, files_done=0)))
    time.sleep(3600)
elif mode == "progress_lies":  # beyond its files, then back: the broker must clamp and hold
    send(encode_frame(Progress(scanned=1 << 50, files_done=99)))
    time.sleep(0.2)  # so that the broker reads each report on its own
    send(encode_frame(Progress(scanned=3, files_done=0)))
    time.sleep(0.2)
    send(encode_frame(lines) + encode_frame(Done(more=False)))
elif mode == "slow_ok":
    time.sleep(float(os.environ.get("FAKE_DELAY", "0.5")))
    send(encode_frame(lines) + encode_frame(Done(more=False)))
"""


def fake_worker(mode: str, env: dict[str, str] | None = None) -> Worker:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", FAKE_WORKER, str(child.fileno()), mode, str(ROOT)],
        pass_fds=(child.fileno(),),
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        env=env or {},
    )
    child.close()
    parent.setblocking(False)
    return Worker("grep", proc.pid, parent, NO_CGROUPS, [], proc)


@dataclass
class FakePool:
    """Hands out stand-in workers in the order of `modes` (then "ok")."""

    modes: list[str]
    env: dict[str, str] = field(default_factory=dict)
    started: list[Worker] = field(default_factory=list)
    deferred: list[Any] = field(default_factory=list)  # stopping a worker after its reply (the real pool runs it)

    def after_call(self, work: Any) -> None:
        self.deferred.append(work)

    def has_ripgrep(self) -> bool:
        return False  # stand-in workers speak the protocol, not an engine

    @asynccontextmanager
    async def worker(self, kind: str) -> AsyncIterator[Worker]:
        worker = fake_worker(self.modes.pop(0) if self.modes else "ok", self.env)
        self.started.append(worker)
        yield worker


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth.log"
    path.write_text("first matching line\nsecond line\n")
    return path


def make_bastion(tmp_path: Path, log_file: Path, pool: FakePool, toml: str = "", **limits: Any) -> Bastion:
    limits = {"timeout_s": 2, **limits}
    policy = load_policy(write_policy(tmp_path, [log_file], toml=toml, **limits))
    return Bastion(policy, pool, AuditLog(policy.audit.path), client="tester")  # type: ignore[arg-type]


def ends(tmp_path: Path) -> list[dict[str, Any]]:
    return [record for record in read_audit(tmp_path / "audit.jsonl") if record["event"] == "end"]


def alive(pool: FakePool) -> list[int]:
    return [
        w.pid
        for w in pool.started
        if psutil.pid_exists(w.pid) and psutil.Process(w.pid).status() != psutil.STATUS_ZOMBIE
    ]


def reply_text(result: Any) -> str:
    return result.content[0].text


FAULTS = [
    # mode, audit outcome, what the end record must say
    ("hang", "timeout", {}),
    ("silent_exit", "worker_crashed", {"detail": "worker closed its channel without a final reply", "exit_code": 0}),
    ("garbage", "worker_crashed", {}),
    ("truncated", "worker_crashed", {"exit_code": 0}),
    ("oversized", "worker_crashed", {}),
    ("wrong_frame", "worker_crashed", {}),
    ("killed_mid_call", "worker_crashed", {"signal": "SIGKILL"}),
    (
        "outer_killed",
        "worker_crashed",
        {"signal": "SIGKILL", "stopped_after_reply": False, "detail": "worker exited without a final reply"},
    ),
    ("sigsys", "sandbox_violation", {"signal": "SIGSYS"}),
]


@pytest.mark.parametrize(("mode", "outcome", "fields"), FAULTS, ids=[fault[0] for fault in FAULTS])
async def test_worker_fault_gives_a_clean_error_and_an_end_record(
    tmp_path: Path, log_file: Path, mode: str, outcome: str, fields: dict[str, Any]
) -> None:
    pool = FakePool([mode])
    bastion = make_bastion(tmp_path, log_file, pool)
    result = await bastion.call_tool("query_logs", {"log_path": str(log_file), "pattern": "first"})
    assert result.is_error
    text = reply_text(result)
    assert str(tmp_path) not in text and "Traceback" not in text
    (end,) = ends(tmp_path)
    assert end["outcome"] == outcome and end["success"] is False
    for key, value in fields.items():
        assert end[key] == value, end
    assert alive(pool) == []  # killed and reaped
    # and the broker keeps serving
    again = await bastion.call_tool("query_logs", {"log_path": str(log_file), "pattern": "first"})
    assert not again.is_error and "first matching line" in reply_text(again)
    assert verify([str(tmp_path / "audit.jsonl")]).problem is None


async def test_a_worker_dead_before_its_stop_is_not_recorded_as_stopped(tmp_path: Path, log_file: Path) -> None:
    """The reply arrived, then something else killed the worker: its worker_exit says so."""
    pool = FakePool(["killed_after_reply"])
    bastion = make_bastion(tmp_path, log_file, pool)
    result = await bastion.call_tool("query_logs", {"log_path": str(log_file), "pattern": "first"})
    assert not result.is_error
    (worker,) = pool.started
    with anyio.fail_after(5):
        while not worker.exited():
            await anyio.sleep(0.01)
    for work in pool.deferred:
        await work()
    (fate,) = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "worker_exit"]
    assert fate["signal"] == "SIGKILL" and fate["stopped_after_reply"] is False
    assert alive(pool) == []


async def test_endless_output_is_capped_and_the_worker_killed(tmp_path: Path, log_file: Path) -> None:
    pool = FakePool(["flood"])
    bastion = make_bastion(tmp_path, log_file, pool, max_output_bytes=65536)
    result = await bastion.call_tool("query_logs", {"log_path": str(log_file), "pattern": "y"})
    assert not result.is_error
    assert result.structured_content["truncated"] is True
    (end,) = ends(tmp_path)
    assert end["outcome"] == "output_capped" and end["bytes"] >= 65536
    assert alive(pool) == []


# --- rate limits -------------------------------------------------------------------

RATE = "[rate_limit]\ncalls = 2\nwindow_s = 60\nglobal_calls = 5\nglobal_window_s = 60\n"


async def test_rate_limit_refuses_at_once_with_retry_after(tmp_path: Path, log_file: Path) -> None:
    pool = FakePool([])
    bastion = make_bastion(tmp_path, log_file, pool, toml=RATE)
    args = {"log_path": str(log_file), "pattern": "first"}
    assert not (await bastion.call_tool("query_logs", args)).is_error
    assert not (await bastion.call_tool("query_logs", args)).is_error
    denied = await bastion.call_tool("query_logs", args)
    assert denied.is_error and "rate limited for this client" in reply_text(denied)
    retry = float(reply_text(denied).split("retry_after_s=")[1].rstrip(")"))
    assert 29 <= retry <= 30  # 2 calls per 60 s: one token every 30 s
    assert len(pool.started) == 2  # no worker for the denied call
    records = ends(tmp_path)
    assert [r["outcome"] for r in records] == ["ok", "ok", "denied_rate"]
    assert "worker_pid" not in records[-1]


async def test_one_noisy_client_does_not_stop_another(tmp_path: Path, log_file: Path) -> None:
    pool = FakePool([])
    bastion = make_bastion(tmp_path, log_file, pool, toml=RATE)
    args = {"log_path": str(log_file), "pattern": "first"}
    noisy = [await bastion.call_tool("query_logs", args, client="noisy") for _ in range(4)]
    assert [r.is_error for r in noisy] == [False, False, True, True]
    quiet = await bastion.call_tool("query_logs", args, client="quiet")
    assert not quiet.is_error
    by_client = [(r["client"], r["outcome"]) for r in ends(tmp_path)]
    assert by_client[-1] == ("quiet", "ok")


async def test_global_rate_limit_applies_to_everyone(tmp_path: Path, log_file: Path) -> None:
    pool = FakePool([])
    bastion = make_bastion(tmp_path, log_file, pool, toml=RATE)
    args = {"log_path": str(log_file), "pattern": "first"}
    outcomes = [(await bastion.call_tool("query_logs", args, client=f"c{n}")).is_error for n in range(6)]
    assert outcomes == [False] * 5 + [True]
    assert "for the server" in reply_text(await bastion.call_tool("query_logs", args, client="late"))


async def test_per_tool_override(tmp_path: Path, log_file: Path) -> None:
    pool = FakePool([])
    toml = RATE + '\n[rate_limit.tools."resources/read"]\ncalls = 1\nwindow_s = 10\n'
    bastion = make_bastion(tmp_path, log_file, pool, toml=toml)
    from broker.errors import ToolError

    await bastion.read_resource("file://" + str(log_file))
    with pytest.raises(ToolError, match="rate limited"):
        await bastion.read_resource("file://" + str(log_file))
    # query_logs has its own bucket (the default 2 per 60 s)
    assert not (await bastion.call_tool("query_logs", {"log_path": str(log_file), "pattern": "x"})).is_error


# --- bounded concurrency and cancellation ------------------------------------------------


async def _wait_until(predicate: Any, timeout_s: float = 10) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():
            await anyio.sleep(0.01)


async def test_busy_when_workers_and_queue_are_full(tmp_path: Path, log_file: Path) -> None:
    pool = FakePool(["hang", "hang"])
    bastion = make_bastion(tmp_path, log_file, pool, max_workers=1, max_queue=1, timeout_s=5)
    args = {"log_path": str(log_file), "pattern": "first"}
    results: list[Any] = []

    async def call() -> None:
        results.append(await bastion.call_tool("query_logs", args))

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await _wait_until(lambda: len(pool.started) == 1)
        group.start_soon(call)  # waits in the queue
        await _wait_until(lambda: bastion._queued == 1)
        busy = await bastion.call_tool("query_logs", args)
        assert busy.is_error and reply_text(busy).startswith("busy:")
        group.cancel_scope.cancel()
    outcomes = sorted(r["outcome"] for r in ends(tmp_path))
    assert outcomes == ["busy", "cancelled", "cancelled"]
    assert alive(pool) == []


async def test_cancellation_kills_the_worker_and_writes_the_end(tmp_path: Path, log_file: Path) -> None:
    pool = FakePool(["hang"])
    bastion = make_bastion(tmp_path, log_file, pool, timeout_s=30)
    async with anyio.create_task_group() as group:
        group.start_soon(bastion.call_tool, "query_logs", {"log_path": str(log_file), "pattern": "first"})
        await _wait_until(lambda: len(pool.started) == 1)
        await anyio.sleep(0.2)
        group.cancel_scope.cancel()
    (end,) = ends(tmp_path)
    assert end["outcome"] == "cancelled" and end["signal"] == "SIGKILL"
    assert alive(pool) == []
    assert verify([str(tmp_path / "audit.jsonl")]).problem is None


async def test_a_call_whose_end_cannot_be_written_is_withheld(
    tmp_path: Path, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = FakePool([])
    bastion = make_bastion(tmp_path, log_file, pool)
    real_write = bastion.audit.write

    def fail_on_end(event: str, **fields: Any) -> int:
        if event == "end":
            from broker.audit.log import AuditError

            raise AuditError("disk full")
        return real_write(event, **fields)

    monkeypatch.setattr(bastion.audit, "write", fail_on_end)
    result = await bastion.call_tool("query_logs", {"log_path": str(log_file), "pattern": "first"})
    assert result.is_error and "audit log cannot be written" in reply_text(result)
    assert "first matching line" not in reply_text(result)
