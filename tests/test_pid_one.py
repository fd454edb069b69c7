"""The worker is born PID 1 of its own pid namespace (workers/confine/namespaces.py).

The launcher clones it with CLONE_PARENT | CLONE_NEWPID, so no monitor stays
outside the namespace: the broker's pidfd and wait4 see the worker itself.
Each boundary that the monitor used to stand for is checked here on a real
worker started through the launcher: a seccomp kill is SIGSYS and a sandbox
violation, orphans die with PID 1, the broker-gone check still fails closed,
and the worker's own cgroup limits apply to it.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import psutil
import pytest

from bastion_wire.plan import Plan
from bastion_wire.protocol import RunRequest
from broker.errors import ToolError
from broker.pool.launcher import spawn_one
from broker.pool.outcome import raise_for
from broker.pool.worker_process import Worker, WorkerResult, python_argv, start_worker
from broker.sandbox.cgroup import CgroupHost
from broker.sandbox.host import cgroup_host
from broker.sandbox.plan import build_plan
from broker.sandbox.profile import load_profile

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the full layer set needs root (see test_rootless.py)")
pytestmark = pytest.mark.usefixtures("own_workers")  # they wait for their workers' exit status
CALL_DEADLINE_S = 20.0
GONE_WITHIN_S = 1.0
LINE_TIMEOUT_S = 10.0


@asynccontextmanager
async def confined(kind: str, stdout: int | None = subprocess.DEVNULL) -> AsyncIterator[tuple[Worker, Plan]]:
    """A ready worker of `kind` that may run a payload (as `bastion sandbox run` does)."""
    cgroups: CgroupHost = cgroup_host()
    plan = build_plan(load_profile(kind, None), "auto", [], cgroups, (), run_mode=True)
    worker = None
    try:
        worker = await start_worker(await spawn_one(plan, cgroups, stdout=stdout))
        yield worker, plan
    finally:
        if worker is not None and not worker.reaped:
            await worker.finish()
        cgroups.close()


async def run_payload(worker: Worker, code: str) -> WorkerResult:
    """Hand the worker a payload and wait, bounded, until it ends; reaped."""
    return await worker.call(RunRequest(argv=[], python=code), None, CALL_DEADLINE_S, 1 << 20)


def read_line(fd: int) -> str:
    """One line a payload printed to the pipe that is its stdout (bounded)."""
    data = b""
    deadline = time.monotonic() + LINE_TIMEOUT_S
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], f"no line from the payload: {data!r}"
        chunk = os.read(fd, 256)
        assert chunk, f"the payload's stdout closed: {data!r}"
        data += chunk
    return data.decode().strip()


def gone(pid: int, timeout_s: float = GONE_WITHIN_S) -> bool:
    """The process is gone, not a zombie either: killed and reaped."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            psutil.Process(pid)
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


@needs_root
@pytest.mark.anyio
async def test_the_worker_is_pid_one_and_the_brokers_own_child() -> None:
    async with confined("resource") as (worker, _):
        status = open(f"/proc/{worker.pid}/status").read()
        (nspid,) = [line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")]
        assert nspid == [str(worker.pid), "1"]  # its pid here, and 1 in its own namespace
        assert psutil.Process(worker.pid).ppid() == os.getpid()
        assert psutil.Process(worker.pid).children() == []  # no monitor, no second process


@needs_root
@pytest.mark.anyio
async def test_a_seccomp_kill_of_pid_one_is_sigsys_and_a_sandbox_violation() -> None:
    async with confined("resource") as (worker, _):
        result = await run_payload(worker, "import os, socket\nassert os.getpid() == 1\nsocket.socket()\n")
    assert result.outcome == "worker_crashed" and result.reaped and result.signal == "SIGSYS", result
    with pytest.raises(ToolError) as error:
        raise_for(result)
    assert error.value.outcome == "sandbox_violation"


ORPHAN = """
import os, signal, time
signal.signal(signal.SIGUSR1, lambda *_: os._exit(0))  # the test's cue to exit by itself
middle = os.fork()
if middle == 0:
    if os.fork() == 0:
        time.sleep(60)  # the orphan: its parent exits at once, PID 1 inherits it
        os._exit(0)
    os._exit(0)
os.waitpid(middle, 0)
print("orphaned", flush=True)
time.sleep(60)
"""


@needs_root
@pytest.mark.anyio
@pytest.mark.parametrize("end", ["exits", "killed"])
async def test_an_orphan_left_by_pid_one_dies_and_is_reaped_with_it(end: str) -> None:
    """Whether PID 1 exits by itself or the broker kills it, what it left behind in its
    namespace is killed and reaped by the kernel before PID 1 itself can be reaped."""
    read_end, write_end = os.pipe()
    try:
        async with confined("grep", stdout=write_end) as (worker, _):
            os.close(write_end)
            write_end = -1
            worker.hand_over(RunRequest(argv=[], python=ORPHAN), None)
            assert read_line(read_end) == "orphaned"
            (orphan,) = psutil.Process(worker.pid).children()  # re-parented to PID 1, not to us
            result = WorkerResult()
            if end == "exits":
                os.kill(worker.pid, signal.SIGUSR1)
                await _wait_exited(worker)
            await worker.finish(result)  # kills the worker's process group, then reaps it
            assert gone(orphan.pid), f"the orphan {orphan.pid} outlived PID 1"
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    assert result.reaped and (result.exit_code == 0 if end == "exits" else result.signal == "SIGKILL"), result


async def _wait_exited(worker: Worker) -> None:
    """Wait (bounded) for the worker to exit by itself: the kernel empties its namespace first."""
    with anyio.move_on_after(CALL_DEADLINE_S):
        await anyio.wait_readable(worker.pidfd)
    assert worker.exited(), "PID 1 did not exit"


FORK_UNTIL_REFUSED = """
import errno, os, time
children = []
for _ in range(64):
    try:
        pid = os.fork()
    except OSError as exc:
        print(len(children), errno.errorcode[exc.errno], flush=True)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
time.sleep(60)
"""


@needs_root
@pytest.mark.anyio
async def test_the_pids_limit_of_its_own_cgroup_applies_to_the_worker() -> None:
    read_end, write_end = os.pipe()
    try:
        async with confined("grep", stdout=write_end) as (worker, plan):
            os.close(write_end)
            write_end = -1
            worker.hand_over(RunRequest(argv=[], python=FORK_UNTIL_REFUSED), None)
            # The worker is one of the cgroup's tasks, so it may add pids - 1.
            assert read_line(read_end).split() == [str(plan.cgroup_limits.pids - 1), "EAGAIN"]
            membership = open(f"/proc/{worker.pid}/cgroup").read()
            assert all(os.path.basename(path) in membership for path in worker.cgroup_dirs)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


HOG = """
chunks = []
for _ in range(64):
    chunks.append(b"x" * (16 << 20))  # written, so charged: 1 GiB at most, the cgroup allows 256 MiB
"""


@needs_root
@pytest.mark.anyio
async def test_the_memory_limit_of_its_own_cgroup_kills_the_worker() -> None:
    async with confined("grep") as (worker, plan):
        result = await run_payload(worker, HOG)
    assert result.signal == "SIGKILL" and result.peak_memory_kb is not None, result
    assert result.peak_memory_kb * 1024 >= plan.cgroup_limits.memory_bytes - (1 << 20)


BROKER_GONE = """
import os, sys
sys.path[:0] = sys.argv[2:]
from workers.confine import session
from workers.confine.layer import LayerError
try:
    session.die_with_broker(int(sys.argv[1]))
except LayerError as exc:
    print(exc.reason)
"""


def test_a_worker_whose_broker_already_exited_refuses_to_go_on() -> None:
    """The check behind the parent-death signal: a pidfd of an exited broker is readable."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    pidfd = os.pidfd_open(dead.pid)
    dead.wait()
    try:
        argv = python_argv(BROKER_GONE, pidfd)
        checked = subprocess.run(argv[:6] + argv[7:], pass_fds=(pidfd,), capture_output=True, text=True, timeout=30)
    finally:
        os.close(pidfd)
    assert checked.stdout.strip() == "the broker exited during start-up", checked.stderr


def test_a_host_that_refuses_the_namespaces_gets_a_worker_that_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher clones without the namespaces and hands the reason on; the layer then
    fails like any other (a required one: SetupFailed, and the broker refuses to serve)."""
    from workers import launcher
    from workers.confine import namespaces, syscalls
    from workers.confine.layer import LayerError

    asked: list[int] = []

    def refuse_namespaces(flags: int = 0) -> int:
        asked.append(flags)
        if flags:
            raise OSError(errno.EPERM, "Operation not permitted")
        return 4242  # as the launcher sees a new child; nothing is cloned here

    monkeypatch.setattr(syscalls, "fork_as_sibling", refuse_namespaces)
    flags = namespaces.birth_flags(["mount", "pid", "net"], user_namespace=True)
    pid, birth = launcher._clone(flags, namespaces.SharedNet())
    assert pid == 4242 and asked == [flags, 0]
    assert birth == namespaces.Birth(0, "clone(pid, user): Operation not permitted")
    with pytest.raises(LayerError, match=r"clone\(pid, user\): Operation not permitted"):
        namespaces.apply(["mount", "pid", "net"], True, (65534, 65534), (1000, 1000), birth)
    with pytest.raises(LayerError, match="born in"):
        namespaces.apply(["mount", "pid", "net"], False, (65534, 65534), (0, 0), namespaces.Birth(0))
