"""What a log store adds over scanning files: the same search in embedded ClickHouse (chdb).

For docs/SCALE.md. Loads the first MB of the bench's big auth log (bench/.data, made by
`make bench`) into a MergeTree table ordered by (host, time), then times, against GNU grep on
the same bytes in the page cache:
  1. a full-text count of "Failed password" (grep -c vs ClickHouse match(), which is RE2:
     linear-time on hostile patterns, like grep);
  2. the same for one host (grep still reads everything; the store reads the host's range);
  3. the first 100 matches (grep -m 100 vs LIMIT 100).
chdb is not a project dependency: `python3 -m venv /tmp/chdb && /tmp/chdb/bin/pip install chdb`,
then `/tmp/chdb/bin/python bench/scale_clickhouse.py [MB]`. Prints one line per case (medians
of 5, alternating) and the load time. Bounded: at most 1024 MB, 5 rounds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import chdb.session  # type: ignore[import-not-found]

DATA = Path(__file__).resolve().parent / ".data" / "auth-1024m.log"
ROUNDS = 5
HOST = "blk000123"


def _grep(args: list[str], path: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(["grep", *args, str(path)], env={"LC_ALL": "C"}, stdout=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"grep exited with {done.returncode}")
    return elapsed


def _query(session: chdb.session.Session, sql: str) -> float:
    started = time.perf_counter()
    session.query(sql, "CSV")
    return time.perf_counter() - started


def _answers(grep_args: list[str], sql: str, path: Path, session: chdb.session.Session) -> str:
    """Both sides' answers, so a fast wrong one shows: counts, or lines returned."""
    grep = subprocess.run(["grep", *grep_args, str(path)], env={"LC_ALL": "C"}, capture_output=True, check=False)
    store = str(session.query(sql, "CSV")).strip()
    if "-c" in grep_args:
        return f"counts {grep.stdout.decode().strip()} / {store}"
    return f"lines {len(grep.stdout.splitlines())} / {len(store.splitlines())}"


def main() -> None:
    megabytes = min(int(sys.argv[1]) if len(sys.argv) > 1 else 256, 1024)
    with tempfile.TemporaryDirectory(prefix="bastion-scale-") as work:
        sample = Path(work) / "auth.log"
        with DATA.open("rb") as source, sample.open("wb") as target:
            target.write(source.read(megabytes << 20).rsplit(b"\n", 1)[0] + b"\n")
        sample.read_bytes()  # into the page cache, as the file scans of make bench are
        session = chdb.session.Session(os.path.join(work, "db"))
        session.query(
            "CREATE TABLE logs (host LowCardinality(String), stamp String, line String) "
            "ENGINE = MergeTree ORDER BY (host, stamp)"
        )
        started = time.perf_counter()
        session.query(
            "INSERT INTO logs SELECT extract(line, '^\\\\S+ +\\\\S+ +\\\\S+ +(\\\\S+)'), substring(line, 1, 15), line "
            f"FROM file('{sample}', 'LineAsString')"
        )
        load_s = time.perf_counter() - started
        cases = {
            "count of 'Failed password', all hosts": (
                ["-c", "Failed password"],
                "SELECT count() FROM logs WHERE match(line, 'Failed password')",
            ),
            f"count for one host ({HOST})": (
                ["-c", f"{HOST} sshd.*Failed password"],
                f"SELECT count() FROM logs WHERE host = '{HOST}' AND match(line, 'Failed password')",
            ),
            "first 100 matches": (
                ["-m", "100", "Failed password"],
                "SELECT line FROM logs WHERE match(line, 'Failed password') LIMIT 100",
            ),
        }
        print(f"{megabytes} MB of auth log, {ROUNDS} rounds; load into MergeTree {load_s:.2f} s")
        for name, (grep_args, sql) in cases.items():
            grep_s, store_s = [], []
            for round_ in range(ROUNDS):
                order = [("grep", grep_args), ("store", sql)]
                for kind, what in order if round_ % 2 == 0 else reversed(order):
                    if kind == "grep":
                        grep_s.append(_grep(what, sample))  # type: ignore[arg-type]
                    else:
                        store_s.append(_query(session, what))  # type: ignore[arg-type]
            g, c = statistics.median(grep_s) * 1000, statistics.median(store_s) * 1000
            agree = _answers(grep_args, sql, sample, session)
            print(f"  {name:<40} grep {g:8.1f} ms   clickhouse {c:8.1f} ms   ratio {g / c:6.2f}x   {agree}")
        session.close()


if __name__ == "__main__":
    main()
