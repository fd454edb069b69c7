"""Bastion against the naive server it replaces, measured side by side in one run.

Generates its data under bench/.data/ (reused by later runs): a 1 MB auth-style
log, a 1 GB one (200 MB with --quick) and a netset feed of 1M entries (100k with
--quick). Then, with Bastion (`bastion serve`, a policy in a temp dir) and the
baseline (bench/baseline_server.py) each over its own stdio session, measures
in alternation (A then B, B then A, ...):

  1. query_logs latency on the 1 MB log, p50/p99, with a 50 ms pause between
     calls (like an assistant) and back to back; calls go in bursts of 10 per
     server so "back to back" stays back to back;
  2. a full scan of the big log with a rare pattern: Bastion vs bare grep -E
     (C locale, output to a pipe) vs rg (if installed) vs the baseline;
  3. a frequent pattern with max_lines=100 on the big log: wall time, and the
     baseline's peak RSS (bounded at 120 s);
  4. peak RSS of Bastion's broker and worker vs the baseline when every line of
     the 1 MB log matches (max_lines 1000 and 100000);
  5. calls/s with 1, 4 and 16 concurrent callers on one session;
  6. check_ip_reputation p50 (Bastion's compiled database vs the baseline's
     per-call feed parse), against Bastion's query_logs p50 measured in the
     same rounds, plus IntelDatabase.lookup calls/s in process.

Prints one table (figure, comparison, ratio, target, verdict) and writes the
same as JSON. No assertions: it reports. Every loop is bounded in count and
time, and every process it starts is stopped, also on Ctrl-C.
Usage: .venv/bin/python bench/run.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from bench_chart import latency_chart  # noqa: E402
from bench_data import (  # noqa: E402
    ALL_PATTERN,
    DATA_DIR,
    FREQUENT_PATTERN,
    LISTED_IP,
    RARE_PATTERN,
    SMALL_PATTERN,
    UNLISTED_IP,
    Dataset,
    dataset_summary,
    prepare,
)
from bench_report import Row, at_least, at_most, median, percentile, ratio, table, write_json  # noqa: E402
from bench_sessions import (  # noqa: E402
    PeakSampler,
    Session,
    Timed,
    baseline_session,
    bastion_session,
    kill_descendants,
    rss,
    timed_call,
    worker_rss,
)

from bastion_wire.intel_db import IntelDatabase  # noqa: E402
from tests.conftest import BASTION, write_policy  # noqa: E402

RATE_LIMITS = "[rate_limit]\ncalls = 1000000\nwindow_s = 1\nglobal_calls = 1000000\nglobal_window_s = 1\n"
PAUSE_S = 0.05
BURST = 10
WARMUP = 5
FREQUENT_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 900.0
SCAN_TIMEOUT_S = 600.0
CONCURRENCY = (1, 4, 16)
MB = 1e6
MIB = 2**20
FLAT_MIB = 10.0


@dataclass(frozen=True)
class Config:
    quick: bool
    cases: tuple[str, ...]
    latency_calls: int
    scan_runs: int
    concurrency_s: float
    intel_rounds: int
    intel_calls_per_round: int
    lookups: int = 100_000

    @classmethod
    def make(cls, quick: bool, cases: tuple[str, ...]) -> Config:
        if quick:
            return cls(
                quick, cases, latency_calls=50, scan_runs=1, concurrency_s=2, intel_rounds=3, intel_calls_per_round=8
            )
        return cls(
            quick, cases, latency_calls=200, scan_runs=3, concurrency_s=5, intel_rounds=5, intel_calls_per_round=8
        )


@dataclass
class Bench:
    config: Config
    data: Dataset
    policy: Path
    database: Path
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def bastion(self) -> AbstractAsyncContextManager[Session]:
        return bastion_session(BASTION, self.policy, DATA_DIR / "bastion.stderr.log", CALL_TIMEOUT_S)

    def baseline(self) -> AbstractAsyncContextManager[Session]:
        return baseline_session(
            [self.data.small_log, self.data.big_log], self.data.feed, DATA_DIR / "baseline.stderr.log", CALL_TIMEOUT_S
        )

    @asynccontextmanager
    async def both(self) -> AsyncIterator[tuple[Session, Session]]:
        async with self.bastion() as bastion, self.baseline() as baseline:
            yield bastion, baseline

    @property
    def audit(self) -> Path:
        return self.policy.parent / "audit.jsonl"  # where write_policy puts it

    @property
    def big_label(self) -> str:
        size = self.data.big_bytes / MIB
        return f"{size / 1024:g} GB" if size >= 1024 else f"{size:g} MB"


# --- set-up -----------------------------------------------------------------


def intel_toml(data: Dataset, database: Path) -> str:
    return (
        f"[intel]\ndatabase = {json.dumps(str(database))}\nmax_age_hours = 87600\n\n"
        f'[[intel.feeds]]\nname = "bench_netset"\npath = {json.dumps(str(data.feed))}\nformat = "netset"\n'
        'category = "attacks"\nconfidence = 90\n'
    )


def make_policy(workdir: Path, data: Dataset, database: Path) -> Path:
    toml = RATE_LIMITS + "\n" + intel_toml(data, database)
    return write_policy(workdir, [data.small_log, data.big_log], toml=toml, max_lines=100_000, timeout_s=600)


def compile_intel(policy: Path, data: Dataset, database: Path) -> float | None:
    """Seconds `bastion intel compile` took, or None when the database was up to date."""
    if database.exists() and database.stat().st_mtime >= data.feed.stat().st_mtime:
        return None
    database.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(
        [str(BASTION), "intel", "compile", "--policy", str(policy)], check=True, capture_output=True, timeout=900
    )
    return time.perf_counter() - started


def warm_page_cache(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as source:
        while source.read(16 * MIB):
            pass
    return time.perf_counter() - started


def host_details() -> dict[str, Any]:
    grep = subprocess.run(["grep", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grep": grep[0] if grep else "?",
        "rg": shutil.which("rg"),
        "loadavg_start": os.getloadavg(),
    }


# --- helpers ----------------------------------------------------------------


def ms(values: list[float]) -> list[float]:
    return [value * 1000 for value in values]


async def interleaved(
    sessions: list[Session], call: Callable[[Session], Awaitable[Timed]], count: int, pause_s: float
) -> dict[str, list[Timed]]:
    """`count` calls per session, in bursts of BURST, the order of sessions alternating."""
    results: dict[str, list[Timed]] = {session.name: [] for session in sessions}
    order = list(sessions)
    # This client's own garbage collections (it holds the MCP SDK too) would land
    # inside whichever server's call is in flight: collect between bursts instead.
    gc.disable()
    try:
        for _ in range(count):  # at least one call per pass while any is short: bounded
            if all(len(results[session.name]) >= count for session in order):
                break
            for session in order:
                for _ in range(min(BURST, count - len(results[session.name]))):
                    results[session.name].append(await call(session))
                    await anyio.sleep(pause_s)
                gc.collect()
            order.reverse()
    finally:
        gc.enable()
    return results


def errors_of(timings: list[Timed]) -> list[str]:
    return sorted({timed.error for timed in timings if not timed.ok})


# --- 1. latency on the 1 MB log -----------------------------------------------------


async def latency_case(bench: Bench) -> None:
    arguments = {"log_path": str(bench.data.small_log), "pattern": SMALL_PATTERN, "max_lines": 100}
    async with bench.both() as (bastion, baseline):

        async def call(session: Session) -> Timed:
            return await timed_call(session, "query_logs", arguments, 60)

        await interleaved([bastion, baseline], call, WARMUP, PAUSE_S)
        for label, pause in (("50 ms pause", PAUSE_S), ("back to back", 0.0)):
            results = await interleaved([bastion, baseline], call, bench.config.latency_calls, pause)
            latency_rows(bench, label, results["bastion"], results["baseline"])


def latency_rows(bench: Bench, label: str, ours: list[Timed], theirs: list[Timed]) -> None:
    a, b = ms([t.seconds for t in ours if t.ok]), ms([t.seconds for t in theirs if t.ok])
    p50a, p50b, p99a, p99b = median(a), median(b), percentile(a, 0.99), percentile(b, 0.99)
    note = (
        f"{len(ours)} calls each; Bastion range {min(a, default=0):.0f}-{max(a, default=0):.0f} ms; "
        f"lines returned {ours[0].lines} vs {theirs[0].lines}; errors {errors_of(ours + theirs) or 'none'}"
    )
    for name, x, y, limit in (("p50", p50a, p50b, 1.3), ("p99", p99a, p99b, 2.0)):
        r = ratio(x, y)
        bench.rows.append(
            Row(
                f"query_logs 1 MB log {name}, {label}",
                "ms",
                x,
                y,
                ratio=r,
                ratio_label="Bastion/baseline",
                target=f"≤ {limit}× baseline",
                verdict=at_most(r, limit),
                note=note if name == "p50" else "",
            )
        )
    bench.details.setdefault("latency_ms", {})[label] = {"bastion": a, "baseline": b}
    if label == "50 ms pause":
        bench.details["small_p50_ms"] = p50a


# --- 2. full scan, rare pattern ----------------------------------------------------


async def bare_scan(command: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    with anyio.fail_after(SCAN_TIMEOUT_S):
        done = await anyio.run_process(
            command, check=False, env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        )
    return time.perf_counter() - started, done.stdout.count(b"\n")


async def mcp_scan(
    session: Session, arguments: dict[str, Any], audit: Path | None = None, broker_ms: list[float] | None = None
) -> tuple[float, int]:
    timed = await timed_call(session, "query_logs", arguments, SCAN_TIMEOUT_S)
    if not timed.ok:
        raise RuntimeError(f"{session.name} scan failed: {timed.error}")
    if audit is not None and broker_ms is not None:  # Bastion's own timing of the call, for the note
        broker_ms.append(float(last_audit_end(audit).get("duration_ms", 0)))
    return timed.seconds, timed.lines


async def scan_case(bench: Bench) -> None:
    path = str(bench.data.big_log)
    bench.details["page_cache_warm_s"] = warm_page_cache(bench.data.big_log)
    arguments = {"log_path": path, "pattern": RARE_PATTERN, "max_lines": 100}
    rg = shutil.which("rg")
    broker_ms: list[float] = []
    async with bench.both() as (bastion, baseline):
        runners: dict[str, Callable[[], Awaitable[tuple[float, int]]]] = {
            "bastion": lambda: mcp_scan(bastion, arguments, bench.audit, broker_ms),
            "grep": lambda: bare_scan(["grep", "-E", "-n", "-e", RARE_PATTERN, path]),
            "baseline": lambda: mcp_scan(baseline, arguments),
        }
        if rg:
            runners["rg"] = lambda: bare_scan([rg, "-n", "-e", RARE_PATTERN, path])
        runs = await alternate(runners, bench.config.scan_runs)
    scan_rows(bench, runs, rg is not None, median(broker_ms))


async def alternate(
    runners: dict[str, Callable[[], Awaitable[tuple[float, int]]]], rounds: int
) -> dict[str, list[tuple[float, int]]]:
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in runners}
    names = list(runners)
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            results[name].append(await runners[name]())
    return results


def scan_rows(bench: Bench, runs: dict[str, list[tuple[float, int]]], have_rg: bool, broker_ms: float | None) -> None:
    size = bench.data.big_bytes
    speed = {name: size / MB / t for name, values in runs.items() if (t := median([s for s, _ in values]))}
    found = {name: values[0][1] for name, values in runs.items()}
    case = f"{bench.big_label} rare-pattern scan throughput"
    note = f"median of {bench.config.scan_runs}; matching lines found {found} (expected {bench.data.rare_matches})"
    if broker_ms:
        note += (
            f"; inside Bastion's broker (audit duration) {broker_ms:.0f} ms"
            f" = {size / MB / (broker_ms / 1000):,.0f} MB/s"
        )
    bastion = speed.get("bastion")
    bench.rows.append(
        Row(
            f"{case} vs grep -E",
            "MB/s",
            bastion,
            speed.get("grep"),
            "grep",
            ratio(bastion, speed.get("grep")),
            "Bastion/grep",
            "≥ 1.0× grep",
            at_least(ratio(bastion, speed.get("grep")), 1.0),
            note=note,
        )
    )
    rg_row = Row(
        f"{case} vs ripgrep",
        "MB/s",
        bastion,
        speed.get("rg"),
        "rg",
        ratio(bastion, speed.get("rg")),
        "Bastion/rg",
        "≥ 0.8× rg",
        at_least(ratio(bastion, speed.get("rg")), 0.8) if have_rg else "n/a",
    )
    rg_row.other_text = "" if have_rg else "not installed"
    bench.rows.append(rg_row)
    bench.rows.append(
        Row(
            f"{case} vs baseline",
            "MB/s",
            bastion,
            speed.get("baseline"),
            "baseline",
            ratio(bastion, speed.get("baseline")),
            "Bastion/baseline",
        )
    )
    bench.details["scan_s"] = {name: [s for s, _ in values] for name, values in runs.items()}
    bench.details["scan_broker_ms_median"] = broker_ms


# --- 3. frequent pattern, max_lines=100 -------------------------------------------


async def sampled_call(
    session: Session, probes: dict[str, Callable[[], int]], arguments: dict[str, Any], timeout_s: float
) -> tuple[Timed, PeakSampler]:
    with PeakSampler(probes, limit_s=timeout_s + 10) as sampler:
        timed = await timed_call(session, "query_logs", arguments, timeout_s)
    return timed, sampler


def broker_probes(session: Session) -> dict[str, Callable[[], int]]:
    return {"broker": lambda: rss(session.process), "worker": lambda: worker_rss(session.process)}


async def frequent_case(bench: Bench) -> None:
    arguments = {"log_path": str(bench.data.big_log), "pattern": FREQUENT_PATTERN, "max_lines": 100}
    ours: list[tuple[Timed, PeakSampler]] = []
    theirs: list[tuple[Timed, PeakSampler]] = []
    cost: dict[str, list[float]] = {"bastion": [], "baseline": []}  # MiB a call adds: growth + the worker's own
    async with bench.bastion() as bastion:

        async def bastion_turn() -> None:
            before = rss(bastion.process) / MIB
            ours.append(await sampled_call(bastion, broker_probes(bastion), arguments, SCAN_TIMEOUT_S))
            worker_kb = last_audit_end(bench.audit).get("peak_memory_kb") or 0  # its cgroup: pages it charged itself
            cost["bastion"].append(max(0.0, ours[-1][1].mib("broker") - before) + worker_kb / 1024)

        async def baseline_turn() -> None:
            theirs.append(await baseline_frequent(bench, arguments, cost["baseline"]))

        for index in range(bench.config.scan_runs):
            for turn in (bastion_turn, baseline_turn)[:: 1 if index % 2 == 0 else -1]:
                await turn()
    frequent_rows(bench, ours, theirs, cost)


async def baseline_frequent(bench: Bench, arguments: dict[str, Any], cost: list[float]) -> tuple[Timed, PeakSampler]:
    """One call on a fresh baseline process (its memory is not reused between runs), bounded at 120 s."""
    async with bench.baseline() as baseline:
        before = rss(baseline.process) / MIB
        timed, sampler = await sampled_call(
            baseline, {"server": lambda: rss(baseline.process)}, arguments, FREQUENT_TIMEOUT_S
        )
        cost.append(max(0.0, sampler.mib("server") - before))
        return timed, sampler


def frequent_rows(
    bench: Bench,
    ours: list[tuple[Timed, PeakSampler]],
    theirs: list[tuple[Timed, PeakSampler]],
    cost: dict[str, list[float]],
) -> None:
    ours_s = median([t.seconds for t, _ in ours if t.ok])
    timed_out = any(t.timed_out for t, _ in theirs)
    theirs_s = FREQUENT_TIMEOUT_S if timed_out else median([t.seconds for t, _ in theirs if t.ok])
    speedup = ratio(theirs_s, ours_s)
    note = (
        (
            f"baseline HIT the {FREQUENT_TIMEOUT_S:.0f} s bound: its figure and the ratio are lower bounds; "
            if timed_out
            else ""
        )
        + f"lines {[t.lines for t, _ in ours]} vs {[t.lines for t, _ in theirs]}"
        f"; errors {errors_of([t for t, _ in ours + theirs]) or 'none'}"
    )
    bench.rows.append(
        Row(
            f"frequent pattern, max_lines=100, {bench.big_label} log: wall time",
            "ms",
            ours_s * 1000 if ours_s else None,
            theirs_s * 1000 if theirs_s else None,
            ratio=speedup,
            ratio_label="baseline/Bastion",
            target="≥ 50× faster",
            verdict=at_least(speedup, 50),
            note=note,
        )
    )
    broker = median([s.mib("broker") for _, s in ours])
    server = median([s.mib("server") for _, s in theirs])
    bench.rows.append(
        Row(
            f"frequent pattern, max_lines=100, {bench.big_label}: peak RSS (broker vs server)",
            "MiB",
            broker,
            server,
            ratio=ratio(broker, server),
            ratio_label="Bastion/baseline",
            note="both processes carry the MCP SDK (~68 MiB idle)",
        )
    )
    ours_mib, theirs_mib = median(cost["bastion"]), median(cost["baseline"])
    leaner = ratio(theirs_mib, ours_mib)
    bench.rows.append(
        Row(
            f"frequent pattern, max_lines=100, {bench.big_label}: memory the call adds",
            "MiB",
            ours_mib,
            theirs_mib,
            ratio=leaner,
            ratio_label="baseline/Bastion",
            target="≥ 100× leaner",
            verdict=at_least(leaner, 100),
            note="Bastion: broker RSS growth + the worker's own cgroup peak (worker and engine, without the "
            "pages it shares with the launcher); baseline: server RSS growth",
        )
    )
    bench.details["frequent"] = {
        "bastion_s": [t.seconds for t, _ in ours],
        "baseline_s": [t.seconds for t, _ in theirs],
        "baseline_timed_out": timed_out,
        "baseline_peak_rss_mib": [s.mib("server") for _, s in theirs],
    }


# --- 4. memory when every line matches --------------------------------------------


async def memory_case(bench: Bench) -> None:
    """Fresh servers per run (RSS is a high-water mark): Bastion at max_lines 1000 then 100000, then the baseline."""
    small = str(bench.data.small_log)
    args = {n: {"log_path": small, "pattern": ALL_PATTERN, "max_lines": n} for n in (1000, 100_000)}
    peaks: dict[str, list[float]] = {
        "broker_idle": [],
        "broker_1000": [],
        "broker_100000": [],
        "worker": [],
        "baseline": [],
        "broker_big_1000": [],
    }
    lines: dict[str, int] = {}
    for _ in range(bench.config.scan_runs):
        async with bench.both() as (bastion, baseline):
            peaks["broker_idle"].append(rss(bastion.process) / MIB)
            for n in (1000, 100_000):
                timed, sampler = await sampled_call(bastion, broker_probes(bastion), args[n], 60)
                peaks[f"broker_{n}"].append(sampler.mib("broker"))
                lines[f"bastion_{n}"] = timed.lines
            peaks["worker"].append(sampler.mib("worker"))
            timed, sampler = await sampled_call(baseline, {"server": lambda: rss(baseline.process)}, args[100_000], 60)
            peaks["baseline"].append(sampler.mib("server"))
            lines["baseline_100000"] = timed.lines
    async with bench.bastion() as bastion:
        big = await big_output_probe(bench, bastion)
    async with bench.bastion() as bastion:  # fresh: the same 1000 lines, but 1000x the matching lines behind them
        arguments = {"log_path": str(bench.data.big_log), "pattern": ALL_PATTERN, "max_lines": 1000}
        timed, sampler = await sampled_call(bastion, broker_probes(bastion), arguments, SCAN_TIMEOUT_S)
        peaks["broker_big_1000"] = [sampler.mib("broker")]
        lines["bastion_big_1000"] = timed.lines
    memory_rows(bench, peaks, lines, big)


async def big_output_probe(bench: Bench, bastion: Session) -> dict[str, Any]:
    """Bastion only: every line of the big log matches, max_lines=100000 (about 10 MB of output)."""
    arguments = {"log_path": str(bench.data.big_log), "pattern": ALL_PATTERN, "max_lines": 100_000}
    timed, sampler = await sampled_call(bastion, broker_probes(bastion), arguments, SCAN_TIMEOUT_S)
    structured = timed.result.structured_content if timed.result is not None else None
    reason = structured.get("truncated_reason") if structured else None
    return {
        "broker_mib": sampler.mib("broker"),
        "worker_mib": sampler.mib("worker"),
        "lines": timed.lines,
        "truncated_reason": reason,
        "seconds": timed.seconds,
        "error": timed.error,
        "broker_duration_ms": last_audit_end(bench.audit).get("duration_ms"),
    }


def audited_calls(audit: Path) -> list[dict[str, Any]]:
    """Bastion's end records, each with the fields of its worker_exit record when one follows
    (a worker that replied is stopped and recorded once the reply is out)."""
    records = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
    exits = {r["call"]: r for r in records if r.get("event") == "worker_exit"}
    return [
        {**r, **{k: v for k, v in exits.get(r["call"], {}).items() if k not in ("seq", "ts", "event", "prev", "hash")}}
        for r in records
        if r.get("event") == "end"
    ]


def last_audit_end(audit: Path) -> dict[str, Any]:
    """Bastion's own account of its latest call (the broker's duration, the worker's rusage)."""
    deadline = time.monotonic() + 2.0  # its worker_exit record follows ~20 ms after the reply
    while True:
        ends = audited_calls(audit)
        last = ends[-1] if ends else {}
        if last.get("worker_exit") != "follows" or "cpu_s" in last or time.monotonic() > deadline:
            return last
        time.sleep(0.02)


def memory_rows(bench: Bench, peaks: dict[str, list[float]], lines: dict[str, int], big: dict[str, Any]) -> None:
    at_1000, at_max = median(peaks["broker_1000"]), median(peaks["broker_100000"])
    baseline, worker = median(peaks["baseline"]), median(peaks["worker"])
    note = (
        f"median of {len(peaks['baseline'])} fresh servers; lines returned {lines}"
        f"; broker idle {median(peaks['broker_idle']):.1f} MiB"
    )
    bench.rows.append(
        Row(
            "peak RSS, all lines of 1 MB log match, max_lines=100000: broker",
            "MiB",
            at_max,
            baseline,
            ratio=ratio(at_max, baseline),
            ratio_label="Bastion/baseline",
            target="≤ 100 MiB",
            verdict=at_most(at_max, 100),
            note=note,
        )
    )
    bench.rows.append(
        Row(
            "  same call: peak RSS of a worker",
            "MiB",
            worker,
            baseline,
            ratio=ratio(worker, baseline),
            ratio_label="worker/baseline",
        )
    )
    big_1000 = median(peaks["broker_big_1000"])
    growth = big_1000 - at_1000 if big_1000 is not None and at_1000 is not None else None
    bench.rows.append(
        Row(
            f"broker peak RSS as matched output grows: all lines match, max_lines=1000, 1 MB → {bench.big_label} log",
            "MiB",
            big_1000,
            at_1000,
            "1 MB log",
            ratio(big_1000, at_1000),
            f"{bench.big_label}/1 MB",
            f"flat (≤ +{FLAT_MIB:g} MiB)",
            at_most(growth, FLAT_MIB),
            note=f"growth {growth:+.1f} MiB while the matching lines grow ~1000x" if growth is not None else "",
        )
    )
    returned = at_max - at_1000 if at_max is not None and at_1000 is not None else None
    bench.rows.append(
        Row(
            "  for comparison: returned lines 1000 → 100000 (all-matching 1 MB log)",
            "MiB",
            at_max,
            at_1000,
            "at 1000",
            ratio(at_max, at_1000),
            "100000/1000",
            note=(
                f"growth {returned:+.1f} MiB for ~10x the reply: a reply costs the SDK ~14x its text, "
                "bounded by [limits] max_output_bytes"
                if returned is not None
                else ""
            ),
        )
    )
    bench.rows.append(
        Row(
            f"broker peak RSS, all lines of {bench.big_label} log match, max_lines=100000",
            "MiB",
            big["broker_mib"],
            target="≤ 100 MiB",
            verdict=at_most(big["broker_mib"], 100),
            note=f"Bastion only; {big['lines']} lines, truncated_reason={big['truncated_reason']}, "
            f"{big['seconds']:.1f} s end to end ({big['broker_duration_ms']} ms inside the broker per its audit), "
            f"worker peak {big['worker_mib']:.1f} MiB {big['error']}".rstrip(),
        )
    )
    bench.details["memory_mib"] = {**peaks, "big_output": big}


# --- 5. throughput under concurrency ----------------------------------------------


async def throughput(
    session: Session, callers: int, seconds: float, arguments: dict[str, Any]
) -> tuple[float, list[str]]:
    deadline = time.monotonic() + seconds
    done: list[Timed] = []

    async def caller() -> None:
        while time.monotonic() < deadline:
            done.append(await timed_call(session, "query_logs", arguments, 60))

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for _ in range(callers):
            group.start_soon(caller)
    return sum(1 for t in done if t.ok) / (time.monotonic() - started), errors_of(done)


async def concurrency_case(bench: Bench) -> None:
    arguments = {"log_path": str(bench.data.small_log), "pattern": SMALL_PATTERN, "max_lines": 100}
    figures: dict[int, dict[str, tuple[float, list[str]]]] = {}
    async with bench.both() as (bastion, baseline):
        order = [bastion, baseline]
        for callers in CONCURRENCY:
            figures[callers] = {}
            for session in order:
                figures[callers][session.name] = await throughput(
                    session, callers, bench.config.concurrency_s, arguments
                )
            order.reverse()
    for callers, by_name in figures.items():
        (ours, our_errors), (theirs, their_errors) = by_name["bastion"], by_name["baseline"]
        errors = our_errors + their_errors
        bench.rows.append(
            Row(
                f"query_logs calls/s, {callers} concurrent caller(s), one session",
                "calls/s",
                ours,
                theirs,
                ratio=ratio(ours, theirs),
                ratio_label="Bastion/baseline",
                note=f"errors: {errors}" if errors else "",
            )
        )
    bench.details["calls_per_s"] = {c: {k: v[0] for k, v in by.items()} for c, by in figures.items()}


# --- 6. check_ip_reputation ------------------------------------------------------


async def intel_case(bench: Bench) -> None:
    """Rounds of: a burst of check_ip_reputation calls, a burst of query_logs calls on the 1 MB log (the
    target's yardstick, measured in the same minutes), both paced like case 1, then one baseline lookup."""
    config = bench.config
    ours: list[Timed] = []
    queries: list[Timed] = []
    theirs: list[Timed] = []
    verdicts: dict[str, str] = {}
    query = {"log_path": str(bench.data.small_log), "pattern": SMALL_PATTERN, "max_lines": 100}
    async with bench.both() as (bastion, baseline):
        for _ in range(WARMUP):
            await timed_call(bastion, "check_ip_reputation", {"ip_address": LISTED_IP}, 60)
        for _ in range(config.intel_rounds):
            for index in range(config.intel_calls_per_round):
                address = (LISTED_IP, UNLISTED_IP)[index % 2]
                ours.append(await timed_call(bastion, "check_ip_reputation", {"ip_address": address}, 60))
                verdicts[address] = verdict_of(ours[-1])
                await anyio.sleep(PAUSE_S)
            for _ in range(config.intel_calls_per_round):
                queries.append(await timed_call(bastion, "query_logs", query, 60))
                await anyio.sleep(PAUSE_S)
            theirs.append(
                await timed_call(baseline, "check_ip_reputation", {"ip_address": LISTED_IP}, FREQUENT_TIMEOUT_S)
            )
            await anyio.sleep(PAUSE_S)
    intel_rows(bench, ours, theirs, queries, verdicts)


def verdict_of(timed: Timed) -> str:
    structured = timed.result.structured_content if timed.result is not None else None
    return str(structured.get("verdict")) if structured else f"error: {timed.error}"


def lookup_rate(database: Path, count: int) -> tuple[float, float]:
    """Lookups per second over `count` random IPv4 addresses: first pass (pages cold), second pass."""
    rng = random.Random(4)
    addresses = [rng.getrandbits(32) for _ in range(count)]
    fd = os.open(database, os.O_RDONLY)
    try:
        intel = IntelDatabase.open_fd(fd)
        rates = (_lookup_pass(intel, addresses), _lookup_pass(intel, addresses))
        intel.close()
    finally:
        os.close(fd)
    return rates


def _lookup_pass(intel: IntelDatabase, addresses: list[int]) -> float:
    lookup = intel.lookup
    started = time.perf_counter()
    for address in addresses:
        lookup(4, address)
    return len(addresses) / (time.perf_counter() - started)


def intel_rows(
    bench: Bench, ours: list[Timed], theirs: list[Timed], queries: list[Timed], verdicts: dict[str, str]
) -> None:
    p50a = median(ms([t.seconds for t in ours if t.ok]))
    p50b = median(ms([t.seconds for t in theirs if t.ok]))
    yardstick = median(ms([t.seconds for t in queries if t.ok]))
    earlier = bench.details.get("small_p50_ms")
    note = (
        f"{len(ours)} vs {len(theirs)} calls, feed of {bench.data.feed_entries:,} entries"
        f"; Bastion verdicts {verdicts}; "
        f"query_logs p50 in the same rounds {yardstick or 0:.1f} ms (case 1: {earlier or 0:.1f} ms); "
        f"errors {errors_of(ours + theirs + queries) or 'none'}"
    )
    bench.rows.append(
        Row(
            f"check_ip_reputation p50 ({bench.data.feed_entries:,}-entry feed)",
            "ms",
            p50a,
            p50b,
            ratio=ratio(p50a, p50b),
            ratio_label="Bastion/baseline",
            target=f"≤ query_logs 1 MB p50 ({yardstick:.1f} ms)" if yardstick else "≤ query_logs 1 MB p50",
            verdict=at_most(p50a, yardstick),
            note=note,
        )
    )
    cold, warm = lookup_rate(bench.database, bench.config.lookups)
    bench.rows.append(
        Row(
            f"IntelDatabase.lookup in process ({bench.config.lookups:,} random IPv4)",
            "M lookups/s",
            warm / 1e6,
            note=f"second pass over the same addresses; first pass (mapping cold) {cold / 1e6:.2f} M/s; "
            f"database {bench.database.stat().st_size / MB:.0f} MB",
        )
    )
    bench.details["intel_ms"] = {
        "bastion": ms([t.seconds for t in ours]),
        "baseline": ms([t.seconds for t in theirs]),
        "bastion_query_logs_same_rounds": ms([t.seconds for t in queries]),
    }


# --- driver ----------------------------------------------------------------------

CASES: list[tuple[str, Callable[[Bench], Awaitable[None]]]] = [
    ("latency", latency_case),
    ("scan", scan_case),
    ("frequent", frequent_case),
    ("memory", memory_case),
    ("concurrency", concurrency_case),
    ("intel", intel_case),
]


async def run_cases(bench: Bench) -> None:
    phases: dict[str, float] = {}
    failures: dict[str, str] = {}
    for name, case in CASES:
        if name not in bench.config.cases:
            continue
        say(f"case {name} ...")
        started = time.monotonic()
        try:
            await case(bench)
        except Exception as exc:  # one failed case must not hide the others' figures
            failures[name] = f"{type(exc).__name__}: {exc}"
            bench.rows.append(Row(f"{name}: FAILED", "", None, verdict="n/a", note=failures[name][:300]))
        phases[name] = round(time.monotonic() - started, 1)
        say(f"case {name} done in {phases[name]:.1f} s")
    bench.details.update(phase_s=phases, failures=failures, audit_summary=audit_summary(bench.audit))


def audit_summary(audit: Path) -> dict[str, dict[str, float | None]]:
    """Per tool, from Bastion's audit: calls, median worker CPU time and max_rss_kb as the audit records them."""
    ends = audited_calls(audit)
    summary: dict[str, dict[str, float | None]] = {}
    for tool in sorted({end.get("tool", "?") for end in ends}):
        mine = [end for end in ends if end.get("tool") == tool]
        summary[tool] = {
            "calls": len(mine),
            "worker_cpu_s_median": median([float(e["cpu_s"]) for e in mine if e.get("cpu_s") is not None]),
            "worker_max_rss_kb_median": median(
                [float(e["max_rss_kb"]) for e in mine if e.get("max_rss_kb") is not None]
            ),
        }
    return summary


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Bastion vs a naive MCP server, side by side.")
    parser.add_argument("--quick", action="store_true", help="200 MB big log, 100k feed, fewer calls and runs")
    parser.add_argument(
        "--cases",
        default=",".join(name for name, _ in CASES),
        help=f"comma-separated subset of: {', '.join(name for name, _ in CASES)} (default all)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=BENCH / "results.json",
        help="where to write the results (default bench/results.json)",
    )
    parser.add_argument(
        "--chart", type=Path, default=BENCH / "latency.png", help="latency chart PNG (default bench/latency.png)"
    )
    return parser.parse_args(argv)


def run(config: Config, json_path: Path, chart_path: Path) -> None:
    started = time.monotonic()
    details: dict[str, Any] = {
        "quick": config.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_details(),
    }
    data = prepare(config.quick, say)
    say("flushing dirty pages (fresh data would otherwise be written back during the timed calls) ...")
    os.sync()  # Bastion fdatasyncs its audit log per call; a writeback storm would land on it, not on the baseline
    for name in ("bastion", "baseline"):
        (DATA_DIR / f"{name}.stderr.log").write_text("")
    database = DATA_DIR / f"intel-{data.feed_entries}.db"
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as workdir:
        policy = make_policy(Path(workdir), data, database)
        details["intel_compile_s"] = compile_intel(policy, data, database)
        bench = Bench(config, data, policy, database, details=details)
        anyio.run(run_cases, bench)
    details.update(dataset=dataset_summary(data), total_s=round(time.monotonic() - started, 1))
    details["host"]["loadavg_end"] = os.getloadavg()
    print(table(bench.rows))
    for tool, figures in details.get("audit_summary", {}).items():
        shown = ", ".join(f"{key} {value:.4g}" for key, value in figures.items() if value is not None)
        print(f"Bastion audit, {tool}: {shown}")
    print(f"\ntotal {details['total_s']:.0f} s; phases {details['phase_s']}; server stderr in {DATA_DIR}/*.stderr.log")
    write_json(json_path, bench.rows, details)
    print(f"results written to {json_path}")
    if "latency_ms" in details:
        title = (
            "query_logs latency, Bastion (sandboxed) vs naive baseline"
            f"; {details['host']['cpus']} CPUs, {details['started']}"
        )
        why_not = latency_chart(details["latency_ms"], chart_path, title)
        print(f"latency chart: {why_not}" if why_not else f"latency chart written to {chart_path}")


def main() -> None:
    args = parse_args(sys.argv[1:])
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cases = tuple(name.strip() for name in args.cases.split(",") if name.strip())
        unknown = set(cases) - {name for name, _ in CASES}
        if unknown:
            raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}")
        run(Config.make(args.quick, cases), args.json, args.chart)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        left = kill_descendants()
        if left:
            print(f"stopped {left} leftover process(es) started by the bench", file=sys.stderr)


if __name__ == "__main__":
    main()
