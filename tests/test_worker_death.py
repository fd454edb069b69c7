"""Deaths in a live server's process tree (issue 21.2, 21.3).

A SIGKILLed broker takes every process it started along, the busy worker's
whole tree (the worker, PID 1 of its pid namespace, and its engine) included,
within a second. A worker killed mid-call ends the call at once as crashed,
its engine dies with it, and the audit says SIGKILL, not a normal stop.
Also run as an unprivileged user by tests/test_rootless.py.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, WORKER_NAME, wait_no_workers, write_policy
from tests.test_lifecycle import GREP_ONLY, RawServer, assert_clean, wait_for_call_in_flight

GONE_WITHIN_S = 1.0
CRASH_REPORTED_WITHIN_S = 2.0
ENGINES = ("grep", "rg")
SHIPPED_UNSHARE = 'unshare = ["mount", "pid", "net", "ipc", "uts", "cgroup"]'


def _profiles_without_pid_namespace(target: Path) -> Path:
    """The shipped profiles, but grep workers get no pid namespace: the worker is not PID 1,
    and starts the engine on the path that forks and sets the parent-death signal."""
    shutil.copytree(ROOT / "sandbox_profiles", target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    grep = target / "grep.toml"
    text = grep.read_text()
    assert SHIPPED_UNSHARE in text, "the shipped grep profile's namespaces changed"
    grep.write_text(text.replace(SHIPPED_UNSHARE, 'unshare = ["mount", "net", "ipc", "uts", "cgroup"]'))
    return target


def _tree(root: psutil.Process) -> list[psutil.Process]:
    return [root, *root.children(recursive=True)]


def _names(processes: list[psutil.Process]) -> list[str]:
    names = []
    for proc in processes:
        try:
            names.append(proc.name())
        except psutil.Error:
            names.append("?")
    return names


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children()
    except psutil.Error:
        return []


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for proc in processes:
        try:  # is_running() also compares the start time: a reused pid is not ours
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.Error:
            continue
    return left


def _wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while (left := _alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


def _busy_worker(broker: psutil.Process, timeout_s: float = 10) -> psutil.Process:
    """The broker's worker child whose tree runs the engine (idle spares have no children)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in broker.children():
            try:
                if child.name() == WORKER_NAME and any(
                    name in ENGINES for name in _names(child.children(recursive=True))
                ):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.02)
    raise TimeoutError("no worker is running the engine")


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    """Servers a test started; killed at the end if a failed assertion left one running."""
    started: list[RawServer] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def _start_slow_call(
    servers: list[RawServer], tmp_path: Path, slow_log: Path, profiles: Path | None = None
) -> tuple[RawServer, Path]:
    policy = write_policy(tmp_path, [slow_log], toml=GREP_ONLY, timeout_s=60)
    audit = tmp_path / "audit.jsonl"
    server = RawServer(policy, [] if profiles is None else ["--profiles-dir", str(profiles)])
    servers.append(server)
    server.initialize()
    server.start_call(2, slow_log)
    wait_for_call_in_flight(audit)
    return server, audit


@pytest.mark.parametrize("pid_namespace", [True, False], ids=["shipped", "no_pid_namespace"])
def test_a_sigkilled_broker_leaves_no_process_of_its_tree(
    servers: list[RawServer], tmp_path: Path, slow_log: Path, pid_namespace: bool
) -> None:
    profiles = None if pid_namespace else _profiles_without_pid_namespace(tmp_path / "profiles")
    server, _ = _start_slow_call(servers, tmp_path, slow_log, profiles)
    broker = psutil.Process(server.proc.pid)
    _busy_worker(broker)
    tree = _tree(broker)
    # The busy worker, its engine, an idle spare: each worker is one process, with or
    # without a pid namespace (no monitor is left outside it).
    assert any(name in ENGINES for name in _names(tree)) and _names(tree).count(WORKER_NAME) >= 2
    assert WORKER_NAME not in _names([child for proc in tree if proc != broker for child in _children(proc)])
    try:
        broker.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=5)
        left = _wait_gone(tree, GONE_WITHIN_S)
        assert not left, (
            f"outlived the broker: {[(proc.pid, name) for proc, name in zip(left, _names(left), strict=True)]}"
        )
    finally:
        for proc in _alive(tree):
            try:
                proc.kill()
            except psutil.Error:
                pass
    assert wait_no_workers(timeout_s=1.0) == []


def test_killing_the_worker_ends_the_call_as_crashed(servers: list[RawServer], tmp_path: Path, slow_log: Path) -> None:
    server, audit = _start_slow_call(servers, tmp_path, slow_log)
    worker = _busy_worker(psutil.Process(server.proc.pid))
    inner = worker.children(recursive=True)
    worker.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    reply = server.receive(2, timeout_s=30)
    took = time.monotonic() - killed
    assert reply["result"]["isError"] and "worker running this call failed" in reply["result"]["content"][0]["text"]
    assert took < CRASH_REPORTED_WITHIN_S, f"the call went on for {took:.1f} s after its worker was killed"
    assert not _wait_gone(inner, GONE_WITHIN_S), "the worker's engine outlived it"
    assert server.proc.stdin is not None
    server.proc.stdin.close()
    code, _ = server.wait_exit()
    assert code == 0
    records = assert_clean(audit)
    (end,) = [r for r in records if r["event"] == "end"]
    assert end["outcome"] == "worker_crashed" and end["signal"] == "SIGKILL" and end["stopped_after_reply"] is False
    assert not [r for r in records if r["event"] == "worker_exit"]
