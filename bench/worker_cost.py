"""What one confined worker costs, through the real launcher: CPU, minor faults, time to Ready.

Starts N grep workers one after another exactly as the pool does
(broker.pool.launcher.Launcher.spawn, then start_worker: the launcher forks,
the worker confines itself with every layer required, says Ready). With
`--call`, each then serves one real search (a SearchRequest on the example
auth.log, the log handed over as a descriptor). Then the broker's end of the
socket is closed, so the worker leaves its linger and exits by itself: its
wait4 rusage then holds its whole tree (the engine it reaped; with the older
pid-namespace monitor, the PID 1 the monitor reaped), which a SIGKILL would not.

Per worker it reports the median user+system CPU and minor page faults
(`ru_minflt`) from that rusage, and the time from asking the launcher to
reading Ready. The launcher's side of each fork (the clone and its page-table
copy) is not in a worker's rusage, so when the host has a cgroup v1 cpuacct
hierarchy (root) this process runs in a group of its own and the group's
CPU, minus this process's own, is reported per worker too: launcher and
worker tree together. Kernel threads (deferred namespace teardown) are not
counted by either.

Usage: nice -n 10 .venv/bin/python bench/worker_cost.py [--workers N] [--call]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bastion_wire.plan import Plan  # noqa: E402
from bastion_wire.protocol import SearchRequest  # noqa: E402
from bench.bench_cpu import CpuGroup  # noqa: E402
from broker.policy import Sandbox  # noqa: E402
from broker.pool.launcher import Launcher  # noqa: E402
from broker.pool.worker_process import Worker, WorkerResult, start_worker  # noqa: E402
from broker.sandbox.cgroup import CgroupHost  # noqa: E402
from broker.sandbox.host import cgroup_host, plans_for  # noqa: E402

LOG = ROOT / "examples" / "logs" / "auth.log"
WARMUP = 5
MAX_WORKERS = 2000
EXIT_TIMEOUT_S = 5.0
CALL_DEADLINE_S = 10.0
MAX_REPLY_BYTES = 1 << 20
EXIT_NO_REQUEST = 65  # a worker that reads EOF instead of a request (workers/main.py EXIT_PROTOCOL)
REQUEST = SearchRequest(pattern="Accepted (password|publickey) for", max_lines=100, max_line_bytes=4096)


@dataclass
class Sample:
    ready_ms: float
    cpu_ms: float
    minflt: int
    outcome: str


async def _exit_by_itself(worker: Worker) -> tuple[float, int]:
    """Close our end (the worker stops lingering and exits 0, or 65 before any request), then reap
    it: (CPU ms, minor faults)."""
    worker.sock.close()
    with anyio.move_on_after(EXIT_TIMEOUT_S):
        await anyio.wait_readable(worker.pidfd)
    result = WorkerResult()
    await worker.finish(result)  # reaps it (kills it first only if it is still there)
    if result.exit_code not in (0, EXIT_NO_REQUEST):
        raise RuntimeError(f"the worker did not exit by itself: {result.exit_code} {result.signal}")
    return result.cpu_s * 1000, result.minor_faults


async def one_worker(launcher: Launcher, plan: Plan, cgroups: CgroupHost, call: bool) -> Sample:
    started = time.perf_counter()
    worker = await start_worker(await launcher.spawn(plan, cgroups))
    ready_ms = (time.perf_counter() - started) * 1000
    outcome = "ready"
    if call:
        fd = os.open(LOG, os.O_RDONLY | os.O_CLOEXEC)
        try:
            result = await worker.call(REQUEST, fd, CALL_DEADLINE_S, MAX_REPLY_BYTES, stop_later=True)
        finally:
            os.close(fd)
        outcome = result.outcome
    cpu_ms, minflt = await _exit_by_itself(worker)
    return Sample(ready_ms, cpu_ms, minflt, outcome)


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _host_busy_s() -> float:
    """All CPUs' non-idle time (/proc/stat): includes kernel threads such as the deferred
    teardown of a network namespace, which no process's rusage holds. Other load shows too."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def measure(workers: int, call: bool, own_net: bool = False) -> dict[str, object]:
    cgroups = cgroup_host()
    plan = plans_for(Sandbox(), cgroups, kinds=("grep",))["grep"]
    if own_net:  # as before the shared empty network namespace: a new one per worker
        plan = msgspec.structs.replace(plan, shared_net=False)
    launcher = Launcher()
    group = CpuGroup.create("worker-cost")
    try:
        for _ in range(WARMUP):
            await one_worker(launcher, plan, cgroups, call)
        if group is not None:
            (group.path / "cgroup.procs").write_text(str(os.getpid()))  # the launcher is already running: move it too
            (group.path / "cgroup.procs").write_text(str(_launcher_pid(launcher)))
        group_before, self_before = (group.usage_s() if group else 0.0), _self_cpu_s()
        host_before = _host_busy_s()
        samples = [await one_worker(launcher, plan, cgroups, call) for _ in range(workers)]
        await anyio.sleep(0.5)  # let deferred teardown (namespaces, cgroups) run before the reading
        host_after = _host_busy_s()
        group_after, self_after = (group.usage_s() if group else 0.0), _self_cpu_s()
    finally:
        await launcher.close()
        cgroups.close()
        if group is not None:
            (group.path.parent / "cgroup.procs").write_text(str(os.getpid()))
            group.remove()
    summary = _summary(samples, call, (group_after - group_before) - (self_after - self_before) if group else None)
    summary["net"] = "own per worker" if own_net else ("shared" if plan.shared_net else "own per worker (plan)")
    summary["host_busy_ms_per_worker"] = round((host_after - host_before) * 1e3 / len(samples), 2)
    return summary


def _launcher_pid(launcher: Launcher) -> int:
    proc = launcher._proc  # noqa: SLF001 - a bench reading the pool's own launcher
    if proc is None:
        raise RuntimeError("the launcher is not running")
    return proc.pid


def _summary(samples: list[Sample], call: bool, tree_cpu_s: float | None) -> dict[str, object]:
    outcomes = sorted({s.outcome for s in samples})
    return {
        "workers": len(samples),
        "mode": "spawn, Ready, one search, exit" if call else "spawn, Ready, exit",
        "outcomes": outcomes,
        "ready_ms_p50": round(statistics.median(s.ready_ms for s in samples), 2),
        "worker_cpu_ms_p50": round(statistics.median(s.cpu_ms for s in samples), 2),
        "worker_minflt_p50": statistics.median(s.minflt for s in samples),
        "tree_cpu_ms_per_worker": None if tree_cpu_s is None else round(tree_cpu_s * 1e3 / len(samples), 2),
        "loadavg": os.getloadavg(),
        "samples": [asdict(s) for s in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", type=int, default=60, help=f"workers to measure (at most {MAX_WORKERS})")
    parser.add_argument("--call", action="store_true", help="each worker serves one search before it exits")
    parser.add_argument("--json", type=Path, help="write every sample here")
    parser.add_argument("--own-net", action="store_true", help="a new network namespace per worker (not shared)")
    args = parser.parse_args()
    summary = anyio.run(measure, min(max(args.workers, 1), MAX_WORKERS), args.call, args.own_net)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    summary.pop("samples")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
