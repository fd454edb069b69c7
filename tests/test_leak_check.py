"""The leak checks (tests/conftest.py) count this test run's workers only, yet still see a leaked one.

A decoy `bastion serve` started outside this process's tree stands for
another server on the host (or another engineer's test run): its idle
workers must not count. A process named like a worker whose parent has died
stands for a worker that outlived its broker: it must.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import BASTION, WORKER_NAME, become_subreaper, wait_no_workers, write_policy

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
ORPHAN = f"""
import os, sys, time
child = os.fork()
if child:
    print(child, flush=True)
    os._exit(0)  # the orphan's parent dies at once, as a broker killed mid-call would
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)  # let go of the test's pipes
with open("/proc/self/comm", "w") as comm:
    comm.write({WORKER_NAME!r})
time.sleep(30)
"""


def _workers_of(server_pid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "ppid"]):
        if proc.info["name"] == WORKER_NAME and proc.info["ppid"] == server_pid:
            found.append(proc)
    return found


def _find_server(policy: Path) -> int | None:
    for proc in psutil.process_iter(["cmdline"]):
        if str(policy) in (proc.info["cmdline"] or []):
            return proc.pid
    return None


@pytest.fixture
def decoy_server(tmp_path: Path) -> Iterator[int]:
    """A `bastion serve` that is no descendant of this test process, with its idle workers up."""
    directory = tmp_path / "decoy"
    directory.mkdir()
    log = directory / "app.log"
    log.write_text("decoy\n")
    policy = write_policy(directory, [log])
    stdin_r, stdin_w = os.pipe()
    become_subreaper(False)  # else the detached server would be re-parented to us
    try:
        # setsid -f forks and its first process exits: the server's parent is above us.
        subprocess.run(
            ["setsid", "-f", str(BASTION), "serve", "--policy", str(policy)],
            stdin=stdin_r,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=START_TIMEOUT_S,
            check=True,
        )
    finally:
        become_subreaper(True)
        os.close(stdin_r)
    server = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and not (server and _workers_of(server)):
            server = server or _find_server(policy)
            time.sleep(0.05)
        assert server and _workers_of(server), "the decoy server did not start its workers"
        assert server not in [proc.pid for proc in psutil.Process().children(recursive=True)]
        yield server
    finally:
        os.close(stdin_w)  # the decoy's stdin ends: it stops and takes its workers along
        if server is not None:
            try:
                psutil.Process(server).wait(STOP_TIMEOUT_S)
            except psutil.TimeoutExpired:
                psutil.Process(server).kill()
            except psutil.NoSuchProcess:
                pass


def test_another_servers_workers_are_not_counted(decoy_server: int) -> None:
    decoys = _workers_of(decoy_server)
    assert wait_no_workers(timeout_s=1.0) == []
    assert all(proc.is_running() for proc in decoys)  # they were there all along


def test_a_worker_whose_parent_died_is_still_counted() -> None:
    proc = subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, timeout=START_TIMEOUT_S, check=True)
    orphan = int(proc.stdout)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while psutil.Process(orphan).name() != WORKER_NAME and time.monotonic() < deadline:
            time.sleep(0.01)
        assert psutil.Process(orphan).ppid() == os.getpid()  # re-parented to us, not to init
        assert orphan in [p.pid for p in wait_no_workers(timeout_s=0.5)]
    finally:
        os.kill(orphan, signal.SIGKILL)
        os.waitpid(orphan, 0)  # ours now: reap it
    assert wait_no_workers(timeout_s=1.0) == []
