"""Bastion against the naive server it replaces, measured side by side in one run.

Generates its data under bench/.data/ (reused by later runs): a 1 MB auth-style
log, a 1 GB one (200 MB with --quick) and a netset feed of 1M entries (100k with
--quick). Then, with Bastion (`bastion serve`, a policy in a temp dir) and the
baseline (bench/baseline_server.py) each over its own stdio session, measures
in alternation (A then B, B then A, ...):

  1. query_logs latency on the 1 MB log, p50/p99, with a 50 ms pause between
     calls (like an assistant) and back to back in bursts of 10 per server
     (the other server's burst runs in between, so Bastion's pool refills);
  1b. a sustained stream: one caller issuing calls back to back for a fixed
     time (bounded in count too), per server in alternating rounds: p50/p99,
     calls/s and the server's CPU per call;
  1c. spawn to `initialize`: from starting each server to its reply;
  2. a full scan of the big log with a rare pattern: Bastion vs bare grep -E
     (C locale, output to a pipe) vs rg in Bastion's read mode (the file on
     stdin, Bastion's flags and rendered pattern) and rg in its default mmap
     mode (the path named) vs the baseline; the page cache is checked (and
     warmed if needed) before every timed scan;
  2b. the log with 31 rotations (32 files, 64 MB): one query_logs call vs one
     rg over the 32 paths;
  3. a frequent pattern with max_lines=100 on the big log: wall time, and the
     baseline's peak RSS (bounded at 120 s);
  4. peak RSS of Bastion's broker and worker vs the baseline when every line of
     the 1 MB log matches (max_lines 1000 and 100000);
  5. calls/s with 1, 4 and 16 concurrent callers on one session, and each
     server's CPU per call (its whole process tree, bench_cpu.py);
  6. check_ip_reputation p50 (Bastion's compiled database vs the baseline's
     per-call feed parse), against Bastion's query_logs p50 measured in the
     same rounds, plus IntelDatabase.lookup calls/s in process;
  7. query_journal over a 200-host journal collector written by the real
     systemd-journal-remote vs `journalctl -D DIR -g PATTERN` on the same
     files: a full search, a rare pattern, early-stopping max_lines, memory
     (bench_journal.py; `--cases journal` runs only this one).

Prints one table (figure, comparison, ratio, target, met/missed) and writes
the same as JSON, every ratio also listed under "ratios". No assertions: it
reports. Every loop is bounded in count and time, and every process it starts
is stopped, also on Ctrl-C.
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
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from bench_cache import CacheCheck, ensure_cached  # noqa: E402
from bench_cache import summary as cache_summary  # noqa: E402
from bench_chart import latency_chart  # noqa: E402
from bench_cpu import remove_leftover_groups  # noqa: E402
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
from bench_journal import journal_case  # noqa: E402
from bench_report import Row, at_least, at_most, median, percentile, ratio, table, verdict_summary, write_json  # noqa: E402
from bench_sessions import (  # noqa: E402
    PeakSampler,
    Session,
    Timed,
    baseline_argv,
    baseline_session,
    bastion_argv,
    bastion_session,
    kill_descendants,
    rss,
    timed_call,
    worker_rss,
)
from bench_startup import spawn_to_initialize  # noqa: E402

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
STREAM_MAX_CALLS = 5000  # a stream ends at its duration or at this count, whichever comes first
# ripgrep as Bastion's grep worker runs it (workers/search.py grep_argv, RG_ENV): keep in step.
RG_AS_BASTION = ["--no-config", "--threads=1", "--text", "--encoding", "none", "--line-number", "--byte-offset"]
RG_AS_BASTION += ["--color=never"]
RG_ENV = {"HOME": "/"}
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
    scan_rounds: int  # timed runs of each engine in the cached-scan and rotation cases (cheap, so more)
    stream_s: float
    stream_rounds: int
    startup_runs: int
    lookups: int = 100_000

    @classmethod
    def make(cls, quick: bool, cases: tuple[str, ...]) -> Config:
        if quick:
            return cls(
                quick,
                cases,
                latency_calls=50,
                scan_runs=1,
                concurrency_s=2,
                intel_rounds=3,
                intel_calls_per_round=8,
                scan_rounds=3,
                stream_s=2.0,
                stream_rounds=2,
                startup_runs=3,
            )
        return cls(
            quick,
            cases,
            latency_calls=200,
            scan_runs=3,
            concurrency_s=5,
            intel_rounds=5,
            intel_calls_per_round=8,
            scan_rounds=5,
            stream_s=5.0,
            stream_rounds=3,
            startup_runs=7,
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
    logs: list[str | Path | dict[str, Any]] = [
        data.small_log,
        data.big_log,
        {"path": str(data.rotated_log), "rotations": True},
    ]
    return write_policy(workdir, logs, toml=toml, max_lines=100_000, timeout_s=600)


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
        for label, pause in (("50 ms pause", PAUSE_S), ("back to back, bursts of 10", 0.0)):
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


# --- 1b. a sustained back-to-back stream -------------------------------------------


@dataclass
class Stream:
    """One stream of back-to-back calls and the server's CPU over it."""

    timings: list[Timed]
    seconds: float
    cpu_s: float
    main_cpu_s: float  # of which the server process itself (bench_cpu.CpuMeter.main_s)


async def back_to_back(session: Session, arguments: dict[str, Any], seconds: float) -> tuple[list[Timed], float]:
    """Calls issued one after the other, each as soon as the previous reply is in, for `seconds`
    (at most STREAM_MAX_CALLS); the client's GC is held off for the stream and run after it."""
    done: list[Timed] = []
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        deadline = time.monotonic() + seconds
        while len(done) < STREAM_MAX_CALLS and time.monotonic() < deadline:
            done.append(await timed_call(session, "query_logs", arguments, 60))
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    return done, elapsed


async def metered(session: Session, run: Callable[[], Awaitable[Any]]) -> tuple[Any, float, float]:
    """run()'s result and the CPU seconds the server's tree spent on it: read once the tree is idle
    before (its pool full) and again once it is idle after (the last teardowns and refills done);
    then the share of the server process itself."""
    before = await session.cpu.settled()
    main_before = session.cpu.main_s()
    result = await run()
    tree = await session.cpu.settled() - before
    return result, tree, session.cpu.main_s() - main_before


async def stream_case(bench: Bench) -> None:
    arguments = {"log_path": str(bench.data.small_log), "pattern": SMALL_PATTERN, "max_lines": 100}
    streams: dict[str, list[Stream]] = {"bastion": [], "baseline": []}
    async with bench.both() as (bastion, baseline):
        order = [bastion, baseline]
        for session in order:
            for _ in range(WARMUP):
                await timed_call(session, "query_logs", arguments, 60)
        for _ in range(bench.config.stream_rounds):
            for session in order:
                (timings, seconds), cpu_s, main_cpu_s = await metered(
                    session, lambda s=session: back_to_back(s, arguments, bench.config.stream_s)
                )
                streams[session.name].append(Stream(timings, seconds, cpu_s, main_cpu_s))
            order.reverse()
        methods = {s.name: s.cpu.method for s in order}
    stream_rows(bench, streams, methods)


def stream_figures(streams: list[Stream]) -> dict[str, Any]:
    timings = [t for stream in streams for t in stream.timings]
    ok = [t.seconds * 1000 for t in timings if t.ok]
    seconds = sum(stream.seconds for stream in streams)
    return {
        "ms": ok,
        "p50": median(ok),
        "p99": percentile(ok, 0.99),
        "calls_per_s": len(ok) / seconds if seconds else None,
        "cpu_ms_per_call": 1000 * sum(stream.cpu_s for stream in streams) / len(ok) if ok else None,
        "main_cpu_ms_per_call": 1000 * sum(stream.main_cpu_s for stream in streams) / len(ok) if ok else None,
        "calls": len(timings),
        "errors": errors_of(timings),
    }


def stream_rows(bench: Bench, streams: dict[str, list[Stream]], methods: dict[str, str]) -> None:
    ours, theirs = stream_figures(streams["bastion"]), stream_figures(streams["baseline"])
    label = f"sustained back-to-back stream ({bench.config.stream_rounds} x {bench.config.stream_s:g} s per server)"
    note = (
        f"one caller, next call as soon as the reply is in; {ours['calls']} vs {theirs['calls']} calls; "
        f"rounds alternate; pool full at each stream's start; errors {ours['errors'] + theirs['errors'] or 'none'}"
    )
    specs = (
        ("p50", "ms", "≤", 1.3, note),
        ("p99", "ms", "≤", 2.0, ""),
        ("calls_per_s", "calls/s", None, None, ""),
        ("cpu_ms_per_call", "ms CPU", None, None, cpu_note(methods)),
        ("main_cpu_ms_per_call", "ms CPU", None, None, MAIN_CPU_NOTE),
    )
    names = {
        "calls_per_s": "calls/s",
        "cpu_ms_per_call": "server CPU per call",
        "main_cpu_ms_per_call": "CPU per call of the server process alone (broker / baseline server)",
    }
    for key, unit, sense, limit, row_note in specs:
        name = names.get(key, key)
        bench.rows.append(
            versus_baseline(
                f"query_logs 1 MB log {name}, {label}", unit, ours[key], theirs[key], sense, limit, row_note
            )
        )
    bench.details["stream"] = {"bastion": ours, "baseline": theirs}
    bench.details.setdefault("latency_ms", {})["sustained stream"] = {"bastion": ours["ms"], "baseline": theirs["ms"]}


def versus_baseline(
    case: str, unit: str, ours: float | None, theirs: float | None, sense: str | None, limit: float | None, note: str
) -> Row:
    """A Bastion/baseline row; with `sense` ("≤" or "≥") and `limit`, a target on the ratio."""
    r = ratio(ours, theirs)
    row = Row(case, unit, ours, theirs, ratio=r, ratio_label="Bastion/baseline", note=note)
    if sense is not None and limit is not None:
        row.target = f"{sense} {limit:g}× baseline"
        row.verdict = at_most(r, limit) if sense == "≤" else at_least(r, limit)
    return row


def cpu_note(methods: dict[str, str]) -> str:
    return (
        f"CPU of each server's whole tree over its runs / its calls ({', '.join(sorted(set(methods.values())))}): "
        "Bastion = broker + launcher + workers + their engines; baseline = server + its grep children; "
        "read when the tree is idle before and after each run; kernel threads and the bench client not counted"
    )


# --- 1c. spawn to initialize -------------------------------------------------------


async def startup_case(bench: Bench) -> None:
    """Alternating fresh starts of each server, timed from spawn to the reply to `initialize`."""
    argvs = {
        "bastion": bastion_argv(BASTION, bench.policy),
        "baseline": baseline_argv([bench.data.small_log, bench.data.big_log], bench.data.feed, "startup"),
    }
    seconds: dict[str, list[float]] = {"bastion": [], "baseline": []}
    order = list(argvs)
    for _ in range(bench.config.startup_runs):
        for name in order:
            stderr = DATA_DIR / f"{name}.stderr.log"
            seconds[name].append(await anyio.to_thread.run_sync(spawn_to_initialize, argvs[name], stderr))
        order.reverse()
    ours, theirs = median(ms(seconds["bastion"])), median(ms(seconds["baseline"]))
    note = (
        f"median of {bench.config.startup_runs} fresh starts each, alternating; raw JSON-RPC on stdin, no SDK client; "
        f"Bastion range {min(ms(seconds['bastion'])):.0f}-{max(ms(seconds['bastion'])):.0f} ms"
    )
    bench.rows.append(versus_baseline("spawn to initialize reply", "ms", ours, theirs, None, None, note))
    bench.details["startup_ms"] = {name: ms(values) for name, values in seconds.items()}


# --- 2. full scan, rare pattern ----------------------------------------------------

Runner = Callable[[], Awaitable[tuple[float, int]]]


async def bare_scan(
    command: list[str], stdin: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, int]:
    """One engine run, output through a pipe (to /dev/null grep would stop at the first match)."""
    environment = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    with open(stdin, "rb") if stdin is not None else nullcontext(None) as source:
        started = time.perf_counter()
        with anyio.fail_after(SCAN_TIMEOUT_S):
            done = await anyio.run_process(command, stdin=source, check=False, env=environment)
        elapsed = time.perf_counter() - started
    return elapsed, done.stdout.count(b"\n")


def bastion_rg_pattern(pattern: str) -> tuple[str, str]:
    """ripgrep's pattern as Bastion renders it from `pattern` (the byte-mode `(?-u)` rendering), and where
    it came from: the broker's own renderer, or (if it moved) `(?-u)` in front of the pattern."""
    try:
        from broker.tools.query_logs.engine import to_rust_regex
        from broker.tools.query_logs.ere import parse_ere
    except ImportError:
        return "(?-u)" + pattern, "(?-u) + the pattern (the broker's renderer was not importable)"
    return to_rust_regex(parse_ere(pattern)), "broker's to_rust_regex"


def rg_as_bastion(rg: str, pattern: str, max_lines: int, paths: list[str] | None = None) -> list[str]:
    """The argv Bastion's worker gives ripgrep (-m max_lines + 1); "-" (stdin) unless paths are named."""
    return [rg, *RG_AS_BASTION, "-m", str(max_lines + 1), "-e", pattern, *(paths or ["-"])]


async def mcp_scan(
    session: Session, arguments: dict[str, Any], audit: Path | None = None, broker_ms: list[float] | None = None
) -> tuple[float, int]:
    timed = await timed_call(session, "query_logs", arguments, SCAN_TIMEOUT_S)
    if not timed.ok:
        raise RuntimeError(f"{session.name} scan failed: {timed.error}")
    if audit is not None and broker_ms is not None:  # Bastion's own timing of the call, for the note
        broker_ms.append(float(last_audit_end(audit).get("duration_ms", 0)))
    return timed.seconds, timed.lines


def scan_runners(
    bench: Bench, bastion: Session, baseline: Session, rg: str | None, broker_ms: list[float]
) -> dict[str, Runner]:
    path = str(bench.data.big_log)
    arguments = {"log_path": path, "pattern": RARE_PATTERN, "max_lines": 100}
    runners: dict[str, Runner] = {
        "bastion": lambda: mcp_scan(bastion, arguments, bench.audit, broker_ms),
        "grep": lambda: bare_scan(["grep", "-E", "-n", "-e", RARE_PATTERN, path]),
        "baseline": lambda: mcp_scan(baseline, arguments),
    }
    if rg:
        pattern, source = bastion_rg_pattern(RARE_PATTERN)
        stdin_argv, mmap_argv = rg_as_bastion(rg, pattern, 100), rg_as_bastion(rg, pattern, 100, [path])
        runners["rg_stdin"] = lambda: bare_scan(stdin_argv, stdin=bench.data.big_log, env=RG_ENV)
        runners["rg_mmap"] = lambda: bare_scan(mmap_argv, env=RG_ENV)
        bench.details["scan_rg"] = {"stdin_argv": stdin_argv, "mmap_argv": mmap_argv, "pattern_from": source}
    return runners


async def scan_case(bench: Bench) -> None:
    rg = shutil.which("rg")
    broker_ms: list[float] = []
    checks: dict[str, list[CacheCheck]] = {}
    async with bench.both() as (bastion, baseline):
        runners = scan_runners(bench, bastion, baseline, rg, broker_ms)
        runs = await alternate(runners, bench.config.scan_rounds, checked([bench.data.big_log], checks))
    bench.details.setdefault("page_cache", {})["scan"] = {k: [c.as_dict() for c in v] for k, v in checks.items()}
    scan_rows(bench, runs, rg is not None, median(broker_ms), [c for v in checks.values() for c in v])


def checked(paths: list[Path], checks: dict[str, list[CacheCheck]]) -> Callable[[str], None]:
    """A hook for alternate(): make sure `paths` are cached right before each timed run, and keep what it found."""

    def before(name: str) -> None:
        checks.setdefault(name, []).append(ensure_cached(paths))

    return before


async def alternate(
    runners: dict[str, Runner], rounds: int, before: Callable[[str], None] | None = None
) -> dict[str, list[tuple[float, int]]]:
    """`rounds` runs of each runner, the order rotating by one each round; `before(name)` precedes each run."""
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in runners}
    names = list(runners)
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            if before is not None:
                before(name)
            results[name].append(await runners[name]())
    return results


def scan_rows(
    bench: Bench,
    runs: dict[str, list[tuple[float, int]]],
    have_rg: bool,
    broker_ms: float | None,
    checks: list[CacheCheck],
) -> None:
    size = bench.data.big_bytes
    speed = {name: size / MB / t for name, values in runs.items() if (t := median([s for s, _ in values]))}
    found = {name: values[0][1] for name, values in runs.items()}
    case = f"{bench.big_label} cached rare-pattern scan throughput"
    note = f"median of {bench.config.scan_rounds}; matching lines found {found} (expected {bench.data.rare_matches})"
    note += f"; {cache_summary(checks)}"
    if broker_ms:
        inside = size / MB / (broker_ms / 1000)
        note += f"; inside Bastion's broker (audit duration) {broker_ms:.0f} ms = {inside:,.0f} MB/s"
    bastion = speed.get("bastion")

    def versus(name: str, label: str, target: float | None, note: str = "") -> Row:
        r, engine = ratio(bastion, speed.get(name)), name.split("_")[0]
        row = Row(
            f"{case} vs {label}", "MB/s", bastion, speed.get(name), name.replace("_", " "), r, f"Bastion/{engine}"
        )
        row.note = note
        if target is not None:
            row.target, row.verdict = f"≥ {target:g}× {engine}", at_least(r, target)
        if engine == "rg" and not have_rg:
            row.other_text, row.verdict = "not installed", "n/a"
        return row

    bench.rows.append(versus("grep", "grep -E", 1.0, note))
    bench.rows.append(
        versus("rg_stdin", "rg (stdin, Bastion's read mode)", 0.95, rg_mode_note(bench) if have_rg else "")
    )
    bench.rows.append(versus("rg_mmap", "rg (mmap, its default)", None))
    bench.rows.append(versus("baseline", "baseline", None))
    bench.details["scan_s"] = {name: [s for s, _ in values] for name, values in runs.items()}
    bench.details["scan_broker_ms_median"] = broker_ms


def rg_mode_note(bench: Bench) -> str:
    rg = bench.details.get("scan_rg", {})
    return (
        "same argv as Bastion's worker (rg --no-config --threads=1 --text --encoding none -n -b -m 101), pattern from "
        f"{rg.get('pattern_from')}; stdin row: the file is rg's stdin (rg reads it); mmap row: the same argv with the "
        "path instead of '-' (rg mmaps one named file)"
    )


# --- 2b. a log and its 31 rotations ------------------------------------------------


async def per_file(argv: list[str], files: list[Path]) -> tuple[float, int]:
    """One engine per file, each on stdin, one after the other: what Bastion's worker does."""
    total, lines = 0.0, 0
    for path in files:
        seconds, found = await bare_scan(argv, stdin=path, env=RG_ENV)
        total, lines = total + seconds, lines + found
    return total, lines


def rotation_runners(bench: Bench, bastion: Session, rg: str | None, broker_ms: list[float]) -> dict[str, Runner]:
    files = bench.data.rotated_files()
    oldest_first = [str(path) for path in reversed(files)]  # the order Bastion searches them in
    arguments = {"log_path": str(bench.data.rotated_log), "pattern": RARE_PATTERN, "max_lines": 1000}
    runners: dict[str, Runner] = {"bastion": lambda: mcp_scan(bastion, arguments, bench.audit, broker_ms)}
    if rg:
        pattern, _ = bastion_rg_pattern(RARE_PATTERN)
        paths = rg_as_bastion(rg, pattern, 1000, oldest_first)
        paths.insert(1, "--no-mmap")  # read(), as from stdin (rg would not mmap > 10 paths anyway)
        default = [rg, "-n", "-e", RARE_PATTERN, *oldest_first]
        stdin = rg_as_bastion(rg, pattern, 1000)
        runners["rg_paths"] = lambda: bare_scan(paths, env=RG_ENV)
        runners["rg_default"] = lambda: bare_scan(default, env=RG_ENV)
        runners["rg_per_file"] = lambda: per_file(stdin, [Path(p) for p in oldest_first])
        bench.details["rotations_rg"] = {"paths_argv": paths[:12] + ["..."], "default_argv": default[:4] + ["..."]}
    return runners


async def rotations_case(bench: Bench) -> None:
    rg = shutil.which("rg")
    broker_ms: list[float] = []
    checks: dict[str, list[CacheCheck]] = {}
    async with bench.bastion() as bastion:
        runners = rotation_runners(bench, bastion, rg, broker_ms)
        for runner in runners.values():  # warm-up, untimed: first opening of the log's directory and files
            await runner()
        broker_ms.clear()
        files = bench.data.rotated_files()
        runs = await alternate(runners, bench.config.scan_rounds, checked(files, checks))
    bench.details.setdefault("page_cache", {})["rotations"] = {k: [c.as_dict() for c in v] for k, v in checks.items()}
    rotation_rows(bench, runs, median(broker_ms), [c for v in checks.values() for c in v])


def rotation_rows(
    bench: Bench, runs: dict[str, list[tuple[float, int]]], broker_ms: float | None, checks: list[CacheCheck]
) -> None:
    wall = {name: median([s * 1000 for s, _ in values]) for name, values in runs.items()}
    found = {name: values[0][1] for name, values in runs.items()}
    size = f"{bench.data.rotated_bytes / MIB:g} MB"
    note = (
        f"median of {bench.config.scan_rounds}; rare pattern; matching lines found {found} "
        f"(expected {bench.data.rotated_matches}); rg: Bastion's argv with the 32 paths and --no-mmap (read(), "
        f"as Bastion's stdin), --threads=1 as in Bastion; {cache_summary(checks)}"
    )
    if broker_ms:
        note += f"; inside Bastion's broker (audit duration) {broker_ms:.0f} ms"
    specs = (
        ("rg_paths", f"log + 31 rotations (32 files, {size}): one query_logs call vs one rg over the 32 paths", 2.0),
        ("rg_default", "  for comparison: one rg over the 32 paths with its defaults (threads auto; reads)", None),
        ("rg_per_file", "  for comparison: 32 rg runs, one per file on stdin, in turn (the worker's old way)", None),
    )
    for name, case, limit in specs:
        r = ratio(wall.get("bastion"), wall.get(name))
        row = Row(case, "ms", wall.get("bastion"), wall.get(name), name.replace("_", " "), r, "Bastion/rg")
        row.note = note if limit else ""
        if limit is not None:
            row.target, row.verdict = f"≤ {limit:g}× rg", at_most(r, limit)
        if name not in wall:
            row.other_text = "not installed"
            row.verdict = "n/a" if limit else row.verdict
        bench.rows.append(row)
    bench.details["rotations_ms"] = {name: [s * 1000 for s, _ in values] for name, values in runs.items()}


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

        checks: list[CacheCheck] = []
        for index in range(bench.config.scan_runs):
            for turn in (bastion_turn, baseline_turn)[:: 1 if index % 2 == 0 else -1]:
                checks.append(ensure_cached([bench.data.big_log]))  # the baseline reads all of it
                await turn()
    bench.details.setdefault("page_cache", {})["frequent"] = [c.as_dict() for c in checks]
    frequent_rows(bench, ours, theirs, cost, cache_summary(checks))


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
    cache_note: str,
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
        + f"lines {[t.lines for t, _ in ours]} vs {[t.lines for t, _ in theirs]}; "
        + f"errors {errors_of([t for t, _ in ours + theirs]) or 'none'}; {cache_note}"
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
    idle = median(peaks["broker_idle"])
    note = f"median of {len(peaks['baseline'])} fresh servers; lines returned {lines}; broker idle {idle:.1f} MiB"
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

CALLS_TARGET = (16, 0.8)  # (callers, Bastion/baseline at least): calls/s
CPU_TARGET = (16, 1.5)  # (callers, Bastion/baseline at most): server CPU per call


MAIN_CPU_NOTE = (
    "the server process's own user+system time (psutil), without its children: for Bastion the broker "
    "(MCP SDK, validation, audit, pool), the rest of the row above being launcher, workers and engines; "
    "for the baseline the server without its grep runs"
)


@dataclass
class Throughput:
    calls_per_s: float
    ok: int
    errors: list[str]
    cpu_s: float = 0.0
    main_cpu_s: float = 0.0

    @property
    def cpu_ms_per_call(self) -> float | None:
        return 1000 * self.cpu_s / self.ok if self.ok else None

    @property
    def main_cpu_ms_per_call(self) -> float | None:
        return 1000 * self.main_cpu_s / self.ok if self.ok else None


async def throughput(session: Session, callers: int, seconds: float, arguments: dict[str, Any]) -> Throughput:
    deadline = time.monotonic() + seconds
    done: list[Timed] = []

    async def caller() -> None:
        while time.monotonic() < deadline:
            done.append(await timed_call(session, "query_logs", arguments, 60))

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for _ in range(callers):
            group.start_soon(caller)
    ok = sum(1 for t in done if t.ok)
    return Throughput(ok / (time.monotonic() - started), ok, errors_of(done))


async def concurrency_case(bench: Bench) -> None:
    arguments = {"log_path": str(bench.data.small_log), "pattern": SMALL_PATTERN, "max_lines": 100}
    figures: dict[int, dict[str, Throughput]] = {}
    async with bench.both() as (bastion, baseline):
        order = [bastion, baseline]
        methods = {s.name: s.cpu.method for s in order}
        for callers in CONCURRENCY:
            figures[callers] = {}
            for session in order:
                run, cpu_s, main_cpu_s = await metered(
                    session, lambda s=session, n=callers: throughput(s, n, bench.config.concurrency_s, arguments)
                )
                run.cpu_s, run.main_cpu_s = cpu_s, main_cpu_s
                figures[callers][session.name] = run
            order.reverse()
    concurrency_rows(bench, figures, methods)


def concurrency_rows(bench: Bench, figures: dict[int, dict[str, Throughput]], methods: dict[str, str]) -> None:
    for callers, by_name in figures.items():
        ours, theirs = by_name["bastion"], by_name["baseline"]
        errors = ours.errors + theirs.errors
        limit = CALLS_TARGET[1] if callers == CALLS_TARGET[0] else None
        case = f"query_logs calls/s, {callers} concurrent caller(s), one session"
        note = f"{ours.ok} vs {theirs.ok} calls in {bench.config.concurrency_s:g} s each" + (
            f"; errors: {errors}" if errors else ""
        )
        bench.rows.append(versus_baseline(case, "calls/s", ours.calls_per_s, theirs.calls_per_s, "≥", limit, note))
    for callers, by_name in figures.items():
        ours, theirs = by_name["bastion"], by_name["baseline"]
        limit = CPU_TARGET[1] if callers == CPU_TARGET[0] else None
        case = f"server CPU per call, {callers} concurrent caller(s)"
        note = cpu_note(methods) if callers == CONCURRENCY[0] else ""
        bench.rows.append(
            versus_baseline(case, "ms CPU", ours.cpu_ms_per_call, theirs.cpu_ms_per_call, "≤", limit, note)
        )
        if callers == CPU_TARGET[0]:
            main = "  of which the server process alone (broker / baseline server)"
            bench.rows.append(
                versus_baseline(
                    main, "ms CPU", ours.main_cpu_ms_per_call, theirs.main_cpu_ms_per_call, None, None, MAIN_CPU_NOTE
                )
            )
    bench.details["main_cpu_ms_per_call"] = {
        c: {k: v.main_cpu_ms_per_call for k, v in by.items()} for c, by in figures.items()
    }
    bench.details["calls_per_s"] = {c: {k: v.calls_per_s for k, v in by.items()} for c, by in figures.items()}
    bench.details["cpu_ms_per_call"] = {c: {k: v.cpu_ms_per_call for k, v in by.items()} for c, by in figures.items()}
    bench.details["cpu_method"] = methods


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
        f"{len(ours)} vs {len(theirs)} calls, feed of {bench.data.feed_entries:,} entries; "
        f"Bastion verdicts {verdicts}; "
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


# --- 7. the journal: a 200-host collector vs journalctl (bench_journal.py) ---------------


async def journal_collector_case(bench: Bench) -> None:
    await journal_case(bench.rows, bench.details, bench.config.quick, say)


# --- driver ----------------------------------------------------------------------

CASES: list[tuple[str, Callable[[Bench], Awaitable[None]]]] = [
    ("latency", latency_case),
    ("stream", stream_case),
    ("startup", startup_case),
    ("scan", scan_case),
    ("rotations", rotations_case),
    ("frequent", frequent_case),
    ("memory", memory_case),
    ("concurrency", concurrency_case),
    ("intel", intel_case),
    ("journal", journal_collector_case),
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
    if set(config.cases) == {"journal"}:  # its own data: no need for the logs and feeds
        rows: list[Row] = []
        anyio.run(journal_case, rows, details, config.quick, say)
        details["total_s"] = round(time.monotonic() - started, 1)
        report(rows, details, json_path)
        return
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
    report(bench.rows, details, json_path)
    if "latency_ms" in details:
        title = (
            f"query_logs latency, Bastion (sandboxed) vs naive baseline; "
            f"{details['host']['cpus']} CPUs, {details['started']}"
        )
        why_not = latency_chart(details["latency_ms"], chart_path, title)
        print(f"latency chart: {why_not}" if why_not else f"latency chart written to {chart_path}")


def report(rows: list[Row], details: dict[str, Any], json_path: Path) -> None:
    details["host"]["loadavg_end"] = os.getloadavg()
    print(table(rows))
    print(verdict_summary(rows))
    for tool, figures in details.get("audit_summary", {}).items():
        shown = ", ".join(f"{key} {value:.4g}" for key, value in figures.items() if value is not None)
        print(f"Bastion audit, {tool}: {shown}")
    phases = f"; phases {details['phase_s']}" if "phase_s" in details else ""
    print(f"\ntotal {details['total_s']:.0f} s{phases}; server stderr in {DATA_DIR}/*.stderr.log")
    write_json(json_path, rows, details)
    print(f"results written to {json_path}")


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
        if remove_leftover_groups():
            print("removed leftover cpuacct group(s) of the bench", file=sys.stderr)


if __name__ == "__main__":
    main()
