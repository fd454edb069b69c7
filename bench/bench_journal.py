"""query_journal on a 200-host collector against journalctl on the same files (bench/run.py case `journal`).

The collector is written by the real systemd-journal-remote (tests/journal_fixtures.py
build_collector: one file per host, received on loopback with --split-mode=host) and
kept in bench/.data/ for later runs. Then, alternating Bastion (`bastion serve` over
stdio, a [[journals]] source on the directory) and `journalctl -D DIR -g PATTERN -o cat`
(what an analyst on the collector would run), with the page cache checked before each:

  a. every "Failed password" entry (4 in 10): Bastion count_only (a count per host) vs
     journalctl printing them all; the counts must agree;
  b. a rare pattern (one entry a host): Bastion max_lines=1000 vs journalctl;
  c. early stop: the first 1000 and the first 10 "Failed password" entries in time over
     every file, Bastion max_lines vs journalctl | head (journalctl stops on SIGPIPE);
  d. memory during (a): the broker's and the workers' peak RSS (sampled), the workers'
     cgroup peak and CPU (Bastion's audit), journalctl's max RSS (wait4).

Rows go into the bench/run.py table; no assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from bench_cache import CacheCheck, ensure_cached
from bench_cache import summary as cache_summary
from bench_data import DATA_DIR
from bench_report import Row, median, ratio
from bench_sessions import PeakSampler, Session, Timed, bastion_session, rss, timed_call, worker_rss

from tests import journal_fixtures
from tests.conftest import BASTION, write_policy

HOSTS = 200
ENTRIES_PER_HOST = {False: 2000, True: 250}  # full, --quick
FREQUENT = "Failed password"
RARE = r"htree_dirblock_to_tree #19$"  # entry 19 of each host
SOURCE = "collector"
CALL_TIMEOUT_S = 600.0
READ_CHUNK = 1 << 16
MIB = 2**20


@dataclass(frozen=True)
class Collector:
    directory: Path
    files: list[Path]
    entries: int  # all hosts together


def collector(quick: bool, say: Callable[[str], None]) -> Collector:
    """The cached collector directory, built (into a temp sibling, then renamed) when missing."""
    per_host = ENTRIES_PER_HOST[quick]
    directory = DATA_DIR / f"journal-{HOSTS}x{per_host}"
    stamp = directory / "BUILT"
    if not stamp.is_file():
        say(f"writing a {HOSTS}-host journal collector ({per_host} entries a host) with systemd-journal-remote ...")
        started = time.monotonic()
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        fresh = Path(tempfile.mkdtemp(dir=DATA_DIR, prefix=f".{directory.name}-"))
        try:
            journal_fixtures.build_collector(fresh, HOSTS, per_host)
            (fresh / "BUILT").write_text(f"{HOSTS} hosts x {per_host} entries\n")
            shutil.rmtree(directory, ignore_errors=True)
            fresh.rename(directory)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        say(f"collector written in {time.monotonic() - started:.1f} s")
    files = [journal_fixtures.collector_file(directory, index) for index in range(HOSTS)]
    return Collector(directory, files, HOSTS * per_host)


# --- journalctl -----------------------------------------------------------------------


@dataclass(frozen=True)
class JournalctlRun:
    seconds: float
    lines: int
    max_rss_kb: int


def journalctl(directory: Path, pattern: str, head: int | None = None) -> JournalctlRun:
    """`journalctl -D DIR -g PATTERN -o cat`, its output read through a pipe (and closed after
    `head` lines, as `| head` would); its own peak RSS from wait4."""
    command = ["journalctl", "-D", str(directory), "-g", pattern, "-o", "cat", "--no-pager", "-q"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "SYSTEMD_PAGER": ""}
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    lines = 0
    bound = threading.Timer(CALL_TIMEOUT_S, proc.kill)  # a read blocks: the kill ends it, and the loop
    bound.start()
    try:
        while chunk := proc.stdout.read1(READ_CHUNK):
            lines += chunk.count(b"\n")
            if head is not None and lines >= head:
                lines = head
                break
        proc.stdout.close()  # SIGPIPE for a journalctl still writing
        _pid, _status, usage = os.wait4(proc.pid, 0)
    finally:
        bound.cancel()
    proc.returncode = 0  # reaped here; keep Popen from waiting again
    return JournalctlRun(time.perf_counter() - started, lines, usage.ru_maxrss)


# --- Bastion ----------------------------------------------------------------------------


def make_policy(workdir: Path, directory: Path) -> Path:
    log = workdir / "unused.log"
    log.write_text("a policy needs a log or a journal; the bench searches the journal\n")
    journals = f'[[journals]]\nname = "{SOURCE}"\npath = "{directory}"\n'
    return write_policy(workdir, [log], toml=journals, max_lines=1000, timeout_s=CALL_TIMEOUT_S)


@dataclass(frozen=True)
class BastionRun:
    timed: Timed
    broker_peak_mib: float
    worker_peak_mib: float

    @property
    def structured(self) -> dict[str, Any]:
        result = self.timed.result
        return result.structured_content or {} if result is not None and not result.is_error else {}

    @property
    def matches(self) -> int | None:
        data = self.structured
        return data.get("total_matches") if data.get("total_matches") is not None else len(data.get("lines", []))


async def bastion_call(session: Session, arguments: dict[str, Any]) -> BastionRun:
    probes = {"broker": lambda: rss(session.process), "worker": lambda: worker_rss(session.process)}
    with PeakSampler(probes, limit_s=CALL_TIMEOUT_S + 10) as sampler:
        timed = await timed_call(session, "query_journal", {"source": SOURCE, **arguments}, CALL_TIMEOUT_S)
    return BastionRun(timed, sampler.mib("broker"), sampler.mib("worker"))


def workers_of_calls(audit: Path) -> dict[int, dict[str, float]]:
    """Per call, from Bastion's audit: how many workers (its end record), the last worker's
    cgroup peak and max RSS (its worker_exit record), and the CPU of them all."""
    calls: dict[int, dict[str, float]] = {}
    for line in audit.read_text().splitlines() if audit.exists() else []:
        record = json.loads(line)
        if record.get("tool") != "query_journal" or record.get("event") not in ("end", "worker_exit"):
            continue
        mine = calls.setdefault(record["call"], {"workers": 0, "peak_memory_kb": 0, "max_rss_kb": 0, "cpu_s": 0.0})
        if record["event"] == "end":
            mine["workers"] = record.get("workers") or 0
            mine["cpu_s"] += record.get("earlier_workers_cpu_s") or 0.0
            continue
        mine["peak_memory_kb"] = max(mine["peak_memory_kb"], record.get("peak_memory_kb") or 0)
        mine["max_rss_kb"] = max(mine["max_rss_kb"], record.get("max_rss_kb") or 0)
        mine["cpu_s"] += record.get("cpu_s") or 0.0
    return calls


# --- the case ---------------------------------------------------------------------------

SEARCHES: dict[str, tuple[dict[str, Any], str, int | None]] = {  # name: (Bastion arguments, journalctl pattern, head)
    "count": ({"pattern": FREQUENT, "count_only": True}, FREQUENT, None),
    "rare": ({"pattern": RARE, "max_lines": 1000}, RARE, None),
    "first1000": ({"pattern": FREQUENT, "max_lines": 1000}, FREQUENT, 1000),
    "first10": ({"pattern": FREQUENT, "max_lines": 10}, FREQUENT, 10),
}


@dataclass
class Figures:
    ours: dict[str, list[BastionRun]]
    theirs: dict[str, list[JournalctlRun]]
    checks: list[CacheCheck]


async def run_searches(session: Session, data: Collector, rounds: int) -> Figures:
    figures = Figures({name: [] for name in SEARCHES}, {name: [] for name in SEARCHES}, [])
    for index in range(rounds):
        for name, (arguments, pattern, head) in SEARCHES.items():
            for turn in ("bastion", "journalctl")[:: 1 if index % 2 == 0 else -1]:
                figures.checks.append(ensure_cached(data.files))
                if turn == "bastion":
                    figures.ours[name].append(await bastion_call(session, arguments))
                else:
                    run = await anyio.to_thread.run_sync(journalctl, data.directory, pattern, head)
                    figures.theirs[name].append(run)
    return figures


async def journal_case(rows: list[Row], details: dict[str, Any], quick: bool, say: Callable[[str], None]) -> None:
    if shutil.which("journalctl") is None or not journal_fixtures.JOURNAL_REMOTE.exists():
        rows.append(Row("journal collector: skipped", "", None, note="needs journalctl and systemd-journal-remote"))
        return
    data = await anyio.to_thread.run_sync(collector, quick, say)
    with tempfile.TemporaryDirectory(prefix="bastion-bench-journal-") as workdir:
        policy = make_policy(Path(workdir), data.directory)
        async with bastion_session(BASTION, policy, DATA_DIR / "bastion-journal.stderr.log", CALL_TIMEOUT_S) as s:
            figures = await run_searches(s, data, 1 if quick else 3)
        audit = workers_of_calls(policy.parent / "audit.jsonl")
    journal_rows(rows, data, figures, audit)
    details["journal"] = {
        "hosts": HOSTS,
        "files": len(data.files),
        "entries": data.entries,
        "bytes_on_disk": sum(path.stat().st_blocks * 512 for path in data.files),
        "bastion_s": {name: [run.timed.seconds for run in runs] for name, runs in figures.ours.items()},
        "journalctl_s": {name: [run.seconds for run in runs] for name, runs in figures.theirs.items()},
        "journalctl_max_rss_kb": {name: [run.max_rss_kb for run in runs] for name, runs in figures.theirs.items()},
        "bastion_workers": list(audit.values()),
        "page_cache": [check.as_dict() for check in figures.checks],
    }


def agreement(ours: Sequence[BastionRun], theirs: Sequence[JournalctlRun]) -> str:
    found = sorted({run.matches for run in ours}, key=str)
    printed = sorted({run.lines for run in theirs})
    errors = sorted({run.timed.error for run in ours if not run.timed.ok})
    same = "equal" if found == printed else "DIFFER"
    return f"matches: Bastion {found}, journalctl {printed} ({same})" + (f"; Bastion errors {errors}" if errors else "")


def journal_rows(rows: list[Row], data: Collector, figures: Figures, audit: dict[int, dict[str, float]]) -> None:
    label = f"{HOSTS}-host collector, {data.entries // 1000}k entries"
    titles = {
        "count": f"journal {label}: every '{FREQUENT}', Bastion count_only vs journalctl -g",
        "rare": f"journal {label}: rare pattern (1 a host), all files",
        "first1000": f"journal {label}: first 1000 '{FREQUENT}' in time (max_lines vs | head)",
        "first10": f"journal {label}: first 10 '{FREQUENT}' in time (max_lines vs | head)",
    }
    for name, title in titles.items():
        ours = median([run.timed.seconds for run in figures.ours[name] if run.timed.ok])
        theirs = median([run.seconds for run in figures.theirs[name]])
        rows.append(
            Row(
                f"{title}: wall time",
                "ms",
                ours * 1000 if ours else None,
                theirs * 1000 if theirs else None,
                other_label="journalctl",
                ratio=ratio(theirs, ours),
                ratio_label="journalctl/Bastion",
                note=agreement(figures.ours[name], figures.theirs[name]),
            )
        )
    counted = median([run.timed.seconds for run in figures.ours["count"] if run.timed.ok])
    printed = median([run.seconds for run in figures.theirs["count"]])
    rows.append(
        Row(
            f"journal {label}: files searched per second (count_only)",
            "files/s",
            len(data.files) / counted if counted else None,
            len(data.files) / printed if printed else None,
            other_label="journalctl",
            note=f"{len(data.files)} files; {cache_summary(figures.checks)}",
        )
    )
    memory_rows(rows, label, figures, audit)


def memory_rows(rows: list[Row], label: str, figures: Figures, audit: dict[int, dict[str, float]]) -> None:
    journalctl_mib = median([run.max_rss_kb / 1024 for run in figures.theirs["count"]])
    broker = median([run.broker_peak_mib for run in figures.ours["count"]])
    worker = median([run.worker_peak_mib for run in figures.ours["count"]])
    workers = list(audit.values())
    cgroup = max((w["peak_memory_kb"] for w in workers), default=0) / 1024 or None
    per_call = sorted({int(w["workers"]) for w in workers})
    rows.append(
        Row(
            f"journal {label}: peak RSS, broker (count_only)",
            "MiB",
            broker,
            journalctl_mib,
            other_label="journalctl",
            ratio=ratio(broker, journalctl_mib),
            ratio_label="Bastion/journalctl",
            note="the broker carries the MCP SDK (~68 MiB idle) and merges the workers' results",
        )
    )
    rows.append(
        Row(
            f"journal {label}: peak RSS, largest worker (count_only)",
            "MiB",
            worker,
            journalctl_mib,
            other_label="journalctl",
            ratio=ratio(worker, journalctl_mib),
            ratio_label="Bastion/journalctl",
            note=f"sampled every 20 ms; workers per call {per_call}, one after the other; last worker's cgroup "
            f"peak {cgroup or 0:.1f} MiB (its own pages, without those shared with the launcher)",
        )
    )
