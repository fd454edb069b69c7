"""Soak: many calls over one stdio session at a given concurrency, then check the aftermath.

The bounded version of this runs in the test suite (500 calls at concurrency
16, tests/test_lifecycle.py). This one runs for as long as asked and reports
throughput, the outcomes, the audit chain's verdict, the broker's peak RSS and
whether any worker process outlived the session.
Usage: .venv/bin/python bench/soak.py [seconds=120] [concurrency=16]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker.audit.verify import summary, verify  # noqa: E402
from tests.conftest import SAMPLE_LOGS, bastion_client, read_audit, wait_no_workers, write_policy  # noqa: E402

NO_RATE_LIMIT = "[rate_limit]\ncalls = 1000000\nwindow_s = 1\nglobal_calls = 1000000\nglobal_window_s = 1\n"
PATTERNS = [
    "Failed password for",
    "Accepted (password|publickey)",
    "sudo: .*COMMAND=",
    "Invalid user [a-z]+ from",
    "^zzz-no-match",
]


def broker_rss_mb() -> float:
    servers = [p for p in psutil.Process().children() if "serve" in " ".join(p.cmdline())]
    return max((p.memory_info().rss for p in servers), default=0) / 2**20


async def soak(seconds: float, concurrency: int, directory: Path) -> tuple[list[float], Counter[str], float]:
    auth = SAMPLE_LOGS / "auth.log"
    policy = write_policy(directory, [auth], toml=NO_RATE_LIMIT, max_queue=max(32, concurrency))
    timings: list[float] = []
    errors: Counter[str] = Counter()
    peak_rss = 0.0
    deadline = time.monotonic() + seconds
    async with bastion_client(policy, timeout_s=120) as client:

        async def caller(index: int) -> None:
            n = index
            while time.monotonic() < deadline:
                started = time.perf_counter()
                reply = await client.call_tool(
                    "query_logs", {"log_path": str(auth), "pattern": PATTERNS[n % len(PATTERNS)], "max_lines": 50}
                )
                timings.append((time.perf_counter() - started) * 1000)
                if reply.is_error:
                    errors[reply.content[0].text[:60]] += 1
                n += concurrency

        async def sampler() -> None:
            nonlocal peak_rss
            while time.monotonic() < deadline:
                peak_rss = max(peak_rss, broker_rss_mb())
                await anyio.sleep(1)

        async with anyio.create_task_group() as group:
            group.start_soon(sampler)
            for index in range(concurrency):
                group.start_soon(caller, index)
    return timings, errors, peak_rss


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 120
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        started = time.monotonic()
        timings, errors, peak_rss = anyio.run(soak, seconds, concurrency, directory)
        elapsed = time.monotonic() - started
        audit = directory / "audit.jsonl"
        events = Counter(record["event"] for record in read_audit(audit))
        report = verify([str(audit)])
    left = wait_no_workers()
    print(
        f"soak: {len(timings)} calls in {elapsed:.1f} s at concurrency {concurrency}"
        f": {len(timings) / elapsed:.1f} calls/s"
    )
    print(f"latency median {statistics.median(timings):.1f} ms, p99 {statistics.quantiles(timings, n=100)[98]:.1f} ms")
    print(f"errors: {dict(errors) or 'none'}")
    print(f"audit: {events['begin']} begin, {events['end']} end; {summary(report, 1)}")
    print(f"broker peak RSS {peak_rss:.1f} MiB; workers left after the session: {len(left)}")
    if errors or events["begin"] != events["end"] or report.problem or left:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
