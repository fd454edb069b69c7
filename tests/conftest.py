"""Shared fixtures: policies in tmp_path and real `bastion serve` sessions over stdio."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest
from mcp import Client, StdioServerParameters

# The journal files the journal tests share (module-scoped fixtures made by the real tools).
pytest_plugins = ["tests.journal_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SAMPLE_LOGS = EXAMPLES / "logs"
BASTION = Path(sys.executable).with_name("bastion")
WORKER_NAME = "bastion-worker"  # workers.main sets it as the process name
PR_SET_CHILD_SUBREAPER = 36


ORPHAN_REAP_INTERVAL_S = 0.05
ORPHAN_REAP_TICKS = 6 * 3600 * 20  # six hours: far beyond any test run


def pytest_configure(config: pytest.Config) -> None:
    become_subreaper()
    threading.Thread(target=_reap_adopted_workers, name="reap-adopted-workers", daemon=True).start()


ADOPTED_NAMES = frozenset({WORKER_NAME, "grep", "rg"})  # a worker and the engines it runs
# Held by the reaper while it scans /proc (which opens descriptors for a moment):
# a test that counts this process's descriptors holds it too (own_descriptors_only).
# Re-entrant: a test may hold it through both context managers below.
_REAPER_SCANNING = threading.RLock()


@contextmanager
def own_descriptors_only() -> Iterator[None]:
    """While inside, no thread of the test harness opens a descriptor (the reaper waits)."""
    with _REAPER_SCANNING:
        yield


@pytest.fixture
def own_workers() -> Iterator[None]:
    """While the test runs, the harness reaps nothing. A test that starts workers in this
    process (the launcher's CLONE_PARENT makes them its children) and waits for their exit
    status would otherwise race the reaper for it when a worker dies early (ECHILD)."""
    with _REAPER_SCANNING:
        yield


def _reap_adopted_workers() -> None:
    """Reap the worker processes this subreaper adopts, as init would.

    A worker is the broker's child and PID 1 of its pid namespace, which takes
    its engines along; but the engine of a worker without a pid namespace, or a
    worker whose broker (a test's server) died, is re-parented to us and dies a
    zombie. Left unreaped, zombies of the workers' uid count
    against the profile's RLIMIT_NPROC (256), and after that many calls every
    new worker fails to fork. Only processes of a worker's session are reaped:
    they run in sessions of their own, while a grep or server that a test starts
    itself stays in ours and keeps its exit status for the test to read."""
    ours = os.getsid(0)
    for _ in range(ORPHAN_REAP_TICKS):  # a daemon thread: it also ends with the test run
        time.sleep(ORPHAN_REAP_INTERVAL_S)
        with _REAPER_SCANNING:
            _reap_once(ours)


def _reap_once(ours: int) -> None:
    for proc in psutil.Process().children():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE and proc.name() in ADOPTED_NAMES and os.getsid(proc.pid) != ours:
                os.waitpid(proc.pid, os.WNOHANG)
        except (psutil.Error, OSError):
            continue


def become_subreaper(on: bool = True) -> None:
    """Make this test process the reaper of its orphans.

    The leak checks below count only this run's workers: descendants of this
    process (another Bastion server, or another test run on the same host, is
    none of our business). A worker that outlives its broker would normally be
    re-parented to init and drop out of our tree; as a child subreaper this
    process inherits it instead, so a genuine leak is still ours to see."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write_policy(
    directory: Path,
    logs: list[str | Path | dict[str, Any]],
    audit: Path | None = None,
    *,
    toml: str = "",
    **limits: Any,
) -> Path:
    """A policy file in `directory` allowlisting `logs` (paths, or [[logs]] tables as dicts),
    with [limits] overrides and extra `toml` tables."""
    lines = []
    for log in logs:
        entry = log if isinstance(log, dict) else {"path": str(log)}
        lines += ["[[logs]]", *(f"{key} = {json.dumps(value)}" for key, value in entry.items()), ""]
    lines += ["[audit]", f"path = {json.dumps(str(audit or directory / 'audit.jsonl'))}", ""]
    # The rootless run (tests/test_rootless.py) downgrades layers a non-root
    # broker cannot apply, exactly as an operator's policy would have to.
    best_effort = [name for name in os.environ.get("BASTION_TEST_BEST_EFFORT", "").split(",") if name]
    if best_effort:
        lines += ["[sandbox]", f"best_effort = {json.dumps(best_effort)}", ""]
    lines += ["[limits]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in limits.items()]
    lines += ["", toml]
    policy = directory / "policy.toml"
    policy.write_text("\n".join(lines) + "\n")
    return policy


def load_script(name: str, path: Path) -> ModuleType:
    """A script that is not a package module (examples/generate_*.py), imported as `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def read_audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def own_processes(name: str) -> list[psutil.Process]:
    """Processes of this name that this test run started, leaked ones included (see become_subreaper)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name() == name:
                found.append(proc)
        except psutil.Error:
            continue  # gone meanwhile
    return found


def worker_processes() -> list[psutil.Process]:
    return own_processes(WORKER_NAME)


def serve_process() -> psutil.Process:
    """The one `bastion serve` this test process started (zombies of earlier tests skipped)."""
    found = []
    for proc in psutil.Process().children():
        try:
            if "serve" in proc.cmdline():
                found.append(proc)
        except psutil.Error:
            continue
    (server,) = found
    return server


def wait_no_workers(timeout_s: float = 5.0) -> list[psutil.Process]:
    """Poll (bounded) until no worker process is left; return any that remain."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in worker_processes() if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return left


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@asynccontextmanager
async def bastion_client(policy: Path, mode: str = "auto", timeout_s: float = 30) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=str(BASTION),
        args=["serve", "--policy", str(policy)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    async with Client(params, read_timeout_seconds=timeout_s, mode=mode) as client:
        yield client


def run_bounded(action: Callable[[], Any], fifo: Path | None, timeout_s: float, fifo_end: int = os.O_RDONLY) -> Any:
    """`action()` in a thread, failing the test if it blocks for more than `timeout_s`.

    An open() stuck on `fifo` (the defect these tests guard against) is released by
    opening its other end (`fifo_end`: O_RDONLY for a stuck writer, O_WRONLY for a
    stuck reader), so the test itself always ends."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = action()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, fifo_end | os.O_NONBLOCK))
            thread.join(timeout_s)
        pytest.fail(f"blocked for more than {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.fixture(scope="module")
def slow_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slow") / "slow.log"
    rng = random.Random(7)
    with path.open("w") as file:
        for _ in range(120_000):  # about 8 MB: several seconds for tests.test_lifecycle.SLOW_PATTERN
            file.write("".join(rng.choice("ab") for _ in range(66)) + "\n")
    return path
