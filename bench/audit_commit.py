"""The audit log's durability cost: a sync per record on the event loop vs group commit.

16 concurrent "calls" each write an end record and wait until it is durable,
as broker/calls.py does; meanwhile a ticker task measures how long the event
loop is stalled (its worst lateness). Run on the state directory's disk
(default: a temp dir under bench/.data, which is on the checkout's disk).
Prints records/s, syncs per record and the worst loop stall for both modes.
Bounded: a fixed number of records per mode.
Usage: .venv/bin/python bench/audit_commit.py [--records 2000] [--callers 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.audit.group_commit import GroupCommit  # noqa: E402
from broker.audit.log import AuditLog  # noqa: E402

DATA = Path(__file__).resolve().parent / ".data"


async def _ticker(stop: anyio.Event, worst: list[float]) -> None:
    while not stop.is_set():
        due = time.perf_counter() + 0.001
        await anyio.sleep(0.001)
        worst[0] = max(worst[0], time.perf_counter() - due)


async def _run(mode: str, directory: str, records: int, callers: int) -> dict[str, float]:
    audit = AuditLog(os.path.join(directory, f"{mode}.jsonl"))
    commit = GroupCommit(audit)
    per_caller = records // callers
    worst = [0.0]
    stop = anyio.Event()

    async def caller(index: int) -> None:
        for number in range(per_caller):
            fields = {"client": "bench", "tool": "query_logs", "call": number, "caller": index}
            if mode == "sync_each":
                audit.write("end", **fields)  # fdatasync inline, on the loop
                await anyio.sleep(0)
            else:
                await commit.durable(audit.write("end", sync=False, **fields))

    started = time.perf_counter()
    async with anyio.create_task_group() as outer:
        outer.start_soon(_ticker, stop, worst)
        async with anyio.create_task_group() as group:
            for index in range(callers):
                group.start_soon(caller, index)
        stop.set()
    elapsed = time.perf_counter() - started
    audit.close()
    written = per_caller * callers
    syncs = written if mode == "sync_each" else commit.syncs
    return {"records_per_s": written / elapsed, "syncs_per_record": syncs / written, "worst_stall_ms": worst[0] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=16)
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DATA) as directory:
        results = {
            mode: anyio.run(_run, mode, directory, args.records, args.callers) for mode in ("sync_each", "group")
        }
    print(f"{'mode':<10} {'records/s':>10} {'syncs/record':>13} {'worst loop stall':>17}")
    for mode, figures in results.items():
        print(
            f"{mode:<10} {figures['records_per_s']:>10.0f} {figures['syncs_per_record']:>13.3f}"
            f" {figures['worst_stall_ms']:>14.2f} ms"
        )
    ratio = results["group"]["records_per_s"] / results["sync_each"]["records_per_s"]
    print(f"group commit: {ratio:.1f}x the records/s of a sync per record, {args.callers} callers")


if __name__ == "__main__":
    main()
