"""End-to-end latency of one query_logs call on a small log, as an MCP client sees it.

Starts `bastion serve` with the example policy, makes a few warm-up calls,
then times N sequential calls (round trip through stdio, validation, audit,
a fresh sandboxed worker, grep, result) and prints the median and spread.
Usage: .venv/bin/python bench/call_latency.py [calls]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import SAMPLE_LOGS, bastion_client, write_policy  # noqa: E402

WARMUP = 5
# Calls arrive like an assistant's do, with a gap in between, so the pool of
# pre-confined workers has refilled (see [workers] prestart). Set 0 for back to back.
PAUSE_S = float(os.environ.get("BASTION_BENCH_PAUSE_S", "0.2"))


async def measure(calls: int) -> list[float]:
    auth = SAMPLE_LOGS / "auth.log"
    with tempfile.TemporaryDirectory() as directory:
        policy = write_policy(Path(directory), [auth])
        async with bastion_client(policy) as client:
            arguments = {"log_path": str(auth), "pattern": "Accepted (password|publickey) for", "max_lines": 20}
            timings = []
            for index in range(WARMUP + calls):
                started = time.perf_counter()
                result = await client.call_tool("query_logs", arguments)
                elapsed = time.perf_counter() - started
                if result.is_error:
                    raise SystemExit(f"call failed: {result.content[0].text}")
                if index >= WARMUP:
                    timings.append(elapsed * 1000)
                await anyio.sleep(PAUSE_S)
    return timings


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    timings = anyio.run(measure, calls)
    quartiles = statistics.quantiles(timings, n=4)
    print(
        f"query_logs on auth.log ({(SAMPLE_LOGS / 'auth.log').stat().st_size // 1024} KiB)"
        f", {calls} calls, end to end over stdio"
    )
    print(
        f"median {statistics.median(timings):.2f} ms   p25 {quartiles[0]:.2f} ms"
        f"   p75 {quartiles[2]:.2f} ms   max {max(timings):.2f} ms"
    )


if __name__ == "__main__":
    main()
