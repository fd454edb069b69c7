"""The launcher that forks workers (workers/launcher.py, broker/pool/launcher.py).

Workers it forks are the broker's own children, in sessions of their own; it
is replaced when it dies, dies with the broker, and refuses anything but a
Fork frame with one descriptor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import anyio
import psutil
import pytest

from bastion_wire.protocol import Fork, encode_frame
from broker.pool.launcher import BOOT
from broker.pool.worker_process import python_argv
from broker.sandbox import cgroup
from tests.conftest import (
    BASTION,
    SAMPLE_LOGS,
    bastion_client,
    own_processes,
    serve_process,
    wait_no_workers,
    worker_processes,
    write_policy,
)
from workers.launcher import LAUNCHER_NAME
from workers.main import EXIT_PROTOCOL, WORKER_NAME

pytestmark = pytest.mark.anyio
AUTH = SAMPLE_LOGS / "auth.log"

ARGS = {"log_path": str(AUTH), "pattern": "sshd", "max_lines": 2}


def the_launcher(broker: psutil.Process) -> psutil.Process:
    """The broker's launcher child (a worker just forked carries its name for a moment)."""

    found: list[psutil.Process] = []

    def one_named_launcher() -> bool:
        # Judge one listing only: a second look may catch a worker in the moment it is forked.
        found[:] = [p for p in broker.children() if _named(p, LAUNCHER_NAME)]
        return len(found) == 1

    assert wait_for(one_named_launcher), found
    return found[0]


def _named(proc: psutil.Process, name: str) -> bool:
    try:
        return proc.name() == name
    except psutil.Error:
        return False


def launchers() -> list[psutil.Process]:
    """This test run's launchers (another server's on the host are not ours to count)."""
    return own_processes(LAUNCHER_NAME)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for(predicate, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


async def test_workers_are_the_brokers_children_in_their_own_sessions(tmp_path: Path) -> None:
    async with bastion_client(write_policy(tmp_path, [AUTH])) as client:
        assert not (await client.call_tool("query_logs", ARGS)).is_error
        broker = serve_process()
        launcher = the_launcher(broker)
        # Monitors are the broker's children; their PID 1s are theirs. The last call's worker
        # may be stopped (it lingers ~20 ms after its reply) while we look: skip the gone.
        workers = [p for p in broker.children() if _named(p, WORKER_NAME)]
        sessions = {}
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                sessions[worker.pid] = (os.getsid(worker.pid), os.getpgid(worker.pid))
        assert sessions, "no idle worker is a child of the broker"
        assert all(sid == pid and pgid == pid for pid, (sid, pgid) in sessions.items())
        assert launcher.ppid() == broker.pid and not [p for p in launcher.children() if _named(p, WORKER_NAME)]


async def test_a_killed_launcher_is_replaced(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, [AUTH], toml="[workers]\nprestart = 0\n")  # every call needs a new worker
    async with bastion_client(policy) as client:
        assert not (await client.call_tool("query_logs", ARGS)).is_error
        first = the_launcher(serve_process())
        first.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(
            wait_for, lambda: not first.is_running() or first.status() == psutil.STATUS_ZOMBIE
        )
        again = await client.call_tool("query_logs", ARGS)
        assert not again.is_error and again.structured_content["lines"]
        second = the_launcher(serve_process())
        assert second.pid != first.pid


def test_the_launcher_and_workers_die_with_the_broker(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, [AUTH])
    server = subprocess.Popen(
        [str(BASTION), "serve", "--policy", str(policy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: any(p.ppid() == server.pid for p in launchers())), "no launcher came up"
        assert wait_for(lambda: any(p.ppid() == server.pid for p in worker_processes()))
        server.kill()  # SIGKILL: no clean-up code runs, only the parent-death signal
        server.wait(timeout=10)
        assert wait_for(lambda: not [p for p in launchers() if _running(p)])
        assert wait_no_workers() == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.parametrize("frame", ["garbage", "fork_without_fd", "two_fds", "unknown_namespace"])
def test_the_launcher_refuses_anything_but_one_fork_with_one_descriptor(frame: str) -> None:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    launcher = subprocess.Popen(
        python_argv(BOOT, child.fileno()), env={}, pass_fds=(child.fileno(),), start_new_session=True
    )
    child.close()
    spare_a, spare_b = socket.socketpair()
    try:
        if frame == "garbage":
            parent.sendall(b"\x00\x00\x00\x05hello")
        elif frame == "fork_without_fd":
            parent.sendall(encode_frame(Fork()))
        elif frame == "unknown_namespace":
            socket.send_fds(parent, [encode_frame(Fork(namespaces=["pid", "time"]))], [spare_a.fileno()])
        else:
            socket.send_fds(parent, [encode_frame(Fork())], [spare_a.fileno(), spare_b.fileno()])
        assert launcher.wait(timeout=30) == EXIT_PROTOCOL
        assert parent.recv(100) == b""  # it forked nothing and said nothing
    finally:
        for sock in (parent, spare_a, spare_b):
            sock.close()
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


JOIN_WAIT_S = 3.0


def _joined_cgroups(pid: int, marker: str) -> list[str]:
    """A worker's /proc/PID/cgroup lines once it has joined its own cgroup (bounded wait):
    the pool tops itself up after each reply, so a spare may be just forked, not yet confined."""
    deadline = time.monotonic() + JOIN_WAIT_S
    while True:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if any(marker in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


@pytest.mark.skipif(os.geteuid() != 0, reason="per-worker cgroups need root")
async def test_each_ready_worker_is_alone_in_its_own_memory_and_pids_cgroups(tmp_path: Path) -> None:
    """Workers join through v1 'tasks' (their own thread; cheaper than cgroup.procs):
    the whole process, and nothing else, must be in the worker's cgroups."""
    async with bastion_client(write_policy(tmp_path, [AUTH])) as client:
        assert not (await client.call_tool("query_logs", ARGS)).is_error
        broker = serve_process()
        marker = f"/{cgroup.broker_tag(broker.pid)}/w"
        checked = 0
        seen: set[str] = set()
        for worker in [p for p in broker.children() if _named(p, WORKER_NAME)]:
            try:  # the last call's worker may be stopped while we look (it lingers ~20 ms)
                lines = _joined_cgroups(worker.pid, marker)
                threads = {
                    Path(f"/proc/{worker.pid}/task/{task}/cgroup").read_text()
                    for task in os.listdir(f"/proc/{worker.pid}/task")
                }
            except FileNotFoundError:
                continue
            own = [line.split(":", 2)[2] for line in lines if marker in line]
            assert own, lines  # v2: one line; v1: the memory and the pids hierarchy
            assert not seen & set(own), "two workers share a cgroup"
            seen.update(own)
            assert threads == {"\n".join(lines) + "\n"}  # every thread moved, not just one
            checked += 1
        assert checked
