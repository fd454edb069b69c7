"""A glob search covers every file it chooses, end to end through real sandboxed workers:
more files than one worker's 32 descriptors run in batches, what is left out or skipped
is reported, and a file that a limit stops (a 100 GB sparse file) costs only that file."""

from __future__ import annotations

import gzip
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from bastion_wire.protocol import MAX_SEARCH_FILES
from broker.files.allowlist import Allowlist
from broker.policy import parse_policy
from tests.conftest import bastion_client, read_audit, write_policy
from tests.test_search_features import NO_RATE_LIMIT, query, query_error

pytestmark = pytest.mark.anyio

BASE_MTIME = 1_790_000_000  # Sep 2026; host N is modified N minutes later


def collector(root: Path, hosts: int, line: str = "sshd[1]: Accepted publickey for deploy\n", lines: int = 1) -> Path:
    """remote/hostN/auth.log for N in 0..hosts-1, host N modified N minutes after host 0."""
    for number in range(hosts):
        log = root / "remote" / f"host{number}" / "auth.log"
        log.parent.mkdir(parents=True)
        log.write_text(line * lines)
        os.utime(log, (BASE_MTIME + 60 * number, BASE_MTIME + 60 * number))
    return root / "remote" / "*" / "auth.log"


def policy_for(tmp_path: Path, pattern: Path, **limits: Any) -> Path:
    return write_policy(tmp_path, [{"path": str(pattern)}], toml=NO_RATE_LIMIT, **limits)


def last_end(tmp_path: Path) -> dict[str, Any]:
    return [record for record in read_audit(tmp_path / "audit.jsonl") if record["event"] == "end"][-1]


def hosts_of(data: dict[str, Any]) -> list[str]:
    return [Path(f["path"]).parent.name for f in data["files"]]


async def test_the_host_the_old_code_skipped_is_searched(tmp_path: Path) -> None:
    """40 hosts: the 32 oldest used to be the whole search; the newest holds the only match."""
    glob = collector(tmp_path, 40)
    (tmp_path / "remote" / "host39" / "auth.log").write_text("sshd[9]: Failed password for root from 203.0.113.66\n")
    async with bastion_client(policy_for(tmp_path, glob)) as client:
        data = await query(client, log_path=str(glob), pattern="Failed password")
    assert [line["text"] for line in data["lines"]] == ["sshd[9]: Failed password for root from 203.0.113.66"]
    assert data["lines"][0]["file"].endswith("host39/auth.log")
    assert len(data["files"]) == 40 and data["truncated"] is False and data["notes"] == []
    end = last_end(tmp_path)
    assert end["files"] == 40 and end["workers"] == 2


async def test_a_thousand_hosts_are_all_counted_in_bounded_time(tmp_path: Path) -> None:
    glob = collector(tmp_path, 1000, lines=3)
    async with bastion_client(policy_for(tmp_path, glob, max_glob_files=1000, timeout_s=120), timeout_s=150) as client:
        started = time.monotonic()
        data = await query(client, log_path=str(glob), pattern="Accepted publickey", count_only=True)
        took = time.monotonic() - started
    assert len(data["files"]) == 1000 and {f["matches"] for f in data["files"]} == {3}
    assert data["total_matches"] == 3000 and data["truncated"] is False
    assert sorted(hosts_of(data)) == sorted(f"host{n}" for n in range(1000))
    end = last_end(tmp_path)
    assert end["files"] == 1000 and end["workers"] == -(-1000 // MAX_SEARCH_FILES)
    assert took < 90, f"1000 files took {took:.1f} s"


async def test_beyond_max_glob_files_the_newest_are_kept_and_the_rest_reported(tmp_path: Path) -> None:
    glob = collector(tmp_path, 25, line="sshd[2]: Failed password for admin\n")
    async with bastion_client(policy_for(tmp_path, glob, max_glob_files=5)) as client:
        newest = await query(client, log_path=str(glob), pattern="Failed", order="newest_first")
        oldest = await query(client, log_path=str(glob), pattern="Failed")
    assert hosts_of(newest) == ["host24", "host23", "host22", "host21", "host20"]
    assert hosts_of(oldest) == ["host20", "host21", "host22", "host23", "host24"]  # still the newest five, oldest first
    for data in (newest, oldest):
        assert data["truncated"] is True and data["truncated_reason"] == "max_glob_files"
        (note,) = data["notes"]
        assert "20 matching file(s) were not searched" in note and "max_glob_files = 5" in note
        assert "host0/auth.log, host1/auth.log" in note and "and 10 more" in note and "host19" not in note
        assert str(tmp_path) not in note
    assert "max_glob_files" in (await _text(tmp_path, glob))
    assert last_end(tmp_path)["files_left_out"] == 20


async def _text(tmp_path: Path, glob: Path) -> str:
    async with bastion_client(policy_for(tmp_path, glob, max_glob_files=5)) as client:
        result = await client.call_tool("query_logs", {"log_path": str(glob), "pattern": "Failed", "count_only": True})
    assert not result.is_error
    return result.content[0].text


async def test_unusable_members_are_skipped_with_a_note_and_the_rest_answer(tmp_path: Path) -> None:
    glob = collector(tmp_path, 4, line="sshd[3]: Failed password for root\n")
    remote = tmp_path / "remote"
    outside = tmp_path / "outside.log"
    outside.write_text("sshd[4]: Failed password for the secret\n")
    for name in ("fifo", "dir", "link", "gone"):
        (remote / name).mkdir()
    os.mkfifo(remote / "fifo" / "auth.log")
    (remote / "dir" / "auth.log").mkdir()
    (remote / "link" / "auth.log").symlink_to(outside)
    (remote / "gone" / "auth.log").symlink_to(remote / "gone" / "vanished.log")
    async with bastion_client(policy_for(tmp_path, glob), timeout_s=30) as client:
        data = await query(client, log_path=str(glob), pattern="Failed password")
    assert len(data["lines"]) == 4 and "secret" not in str(data)
    notes = {note.split(":")[0]: note for note in data["notes"]}
    assert set(notes) == {"fifo/auth.log", "dir/auth.log", "link/auth.log", "gone/auth.log"}, data["notes"]
    assert "not a regular file" in notes["fifo/auth.log"] and "not a regular file" in notes["dir/auth.log"]
    assert "symlink" in notes["gone/auth.log"] and "symlink" in notes["link/auth.log"]  # never followed
    assert all(str(tmp_path) not in note for note in data["notes"])
    assert last_end(tmp_path)["files_skipped"] == 4


def test_a_member_that_vanishes_before_its_batch_is_opened_is_skipped(tmp_path: Path) -> None:
    """Later batches are opened when the search reaches them: a file gone by then is a skip."""
    glob = collector(tmp_path, 40)
    policy = policy_for(tmp_path, glob)
    allowlist = Allowlist(parse_policy(policy.read_bytes(), tmp_path))
    target = allowlist.open_search(str(glob))
    try:
        assert len(target.files) == MAX_SEARCH_FILES and len(target.pending) == 8
        (tmp_path / "remote" / "host35" / "auth.log").unlink()
        target.close()
        allowlist.open_next(target)
        assert len(target.files) == 7 and [Path(s.path).parent.name for s in target.skipped] == ["host35"]
        assert "does not exist" in target.skipped[0].reason
    finally:
        target.close()


def sparse(path: Path) -> None:
    subprocess.run(["truncate", "-s", "100G", str(path)], check=True, timeout=10)


async def test_a_sparse_100_gb_file_names_the_limit_that_stopped_it(tmp_path: Path) -> None:
    glob = collector(tmp_path, 3, line="sshd[5]: Failed password for root\n")
    hole = tmp_path / "remote" / "hole"
    hole.mkdir()
    sparse(hole / "auth.log")
    async with bastion_client(policy_for(tmp_path, glob, timeout_s=60), timeout_s=90) as client:
        alone = await query_error(client, log_path=str(hole / "auth.log"), pattern="Failed")
        data = await query(client, log_path=str(glob), pattern="Failed")
    assert "memory limit" in alone and "worker running this call failed" not in alone and str(tmp_path) not in alone
    assert len(data["lines"]) == 3
    (note,) = data["notes"]
    assert note.startswith("hole/auth.log: not searched to the end") and "memory limit" in note
    ends = [record for record in read_audit(tmp_path / "audit.jsonl") if record["event"] == "end"]
    assert ends[-2]["outcome"] == "limit_exceeded" and ends[-1]["files_skipped"] == 1


async def test_max_lines_stops_across_batches_and_no_further_worker_starts(tmp_path: Path) -> None:
    glob = collector(tmp_path, 70, line="sshd[6]: Failed password for root\n", lines=3)
    async with bastion_client(policy_for(tmp_path, glob)) as client:
        first = await query(client, log_path=str(glob), pattern="Failed", max_lines=5)
        first_end = last_end(tmp_path)
        spanning = await query(client, log_path=str(glob), pattern="Failed", max_lines=100)
        spanning_end = last_end(tmp_path)
    assert len(first["lines"]) == 5 and first["truncated_reason"] == "max_lines"
    assert first_end["workers"] == 1 and first_end["files"] == MAX_SEARCH_FILES
    assert len(spanning["lines"]) == 100 and spanning["truncated_reason"] == "max_lines"
    assert hosts_of(spanning)[-1] == "host63" and spanning["lines"][-1]["file"].endswith("host33/auth.log")
    assert spanning_end["workers"] == 2 and spanning_end["files"] == 64  # the third batch never started


async def test_count_only_totals_add_up_across_batches(tmp_path: Path) -> None:
    glob = collector(tmp_path, 70)
    for number in range(70):
        (tmp_path / "remote" / f"host{number}" / "auth.log").write_text("Failed password\n" * (number % 7) + "other\n")
    async with bastion_client(policy_for(tmp_path, glob)) as client:
        data = await query(client, log_path=str(glob), pattern="Failed", count_only=True)
    counts = {Path(f["path"]).parent.name: f["matches"] for f in data["files"]}
    assert counts == {f"host{number}": number % 7 for number in range(70)}
    assert data["total_matches"] == sum(number % 7 for number in range(70))
    assert last_end(tmp_path)["workers"] == 3


async def test_timeout_s_bounds_the_whole_call_not_each_batch(tmp_path: Path) -> None:
    glob = collector(tmp_path, 1000)
    async with bastion_client(policy_for(tmp_path, glob, timeout_s=1), timeout_s=60) as client:
        started = time.monotonic()
        data = await query(client, log_path=str(glob), pattern="Accepted", count_only=True)
        took = time.monotonic() - started
    assert data["truncated_reason"] == "timeout_s" and 0 < len(data["files"]) < 1000
    assert any("limits.timeout_s (1 s)" in note for note in data["notes"]), data["notes"]
    assert took < 6, f"the call took {took:.1f} s"  # 1 s, a worker's teardown and a loaded host
    end = last_end(tmp_path)
    assert end["files"] + end["files_timed_out"] == 1000


async def test_the_decompression_cap_is_shared_by_the_batches_of_a_call(tmp_path: Path) -> None:
    """limits.max_decompressed_bytes is per call: a later batch gets what is left, not a new cap."""
    logs = tmp_path / "archive"
    logs.mkdir()
    day = b"".join(b"Nov 24 00:00:%02d h sshd[7]: Failed password for root\n" % (n % 60) for n in range(1000))  # ~52 KB
    for number in range(40):
        path = logs / f"auth-{number:02d}.log.gz"
        path.write_bytes(gzip.compress(day, mtime=0))
        os.utime(path, (BASE_MTIME + number, BASE_MTIME + number))
    policy = write_policy(
        tmp_path, [{"path": str(logs / "*.log.gz")}], toml=NO_RATE_LIMIT, max_decompressed_bytes=1 << 20
    )
    async with bastion_client(policy) as client:
        data = await query(client, log_path=str(logs / "*.log.gz"), pattern="Failed", count_only=True)
    counts = [f["matches"] for f in data["files"]]
    assert len(counts) == 40 and counts[0] == 1000  # the first files fit in the cap
    assert counts[MAX_SEARCH_FILES:] == [0] * 8  # the second batch starts with the cap spent
    assert sum(counts) < 1000 * 21 and any("decompression cap of 1048576 bytes" in note for note in data["notes"]), (
        data["notes"]
    )
    assert not any("truncated gzip" in note for note in data["notes"])  # whole files are not truncated
    assert last_end(tmp_path)["workers"] == 2


def test_an_io_error_on_one_file_in_the_worker_costs_that_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the memory limit the kernel may refuse a read with ENOMEM instead of killing: the worker
    stops and reaps that file's engine, reports the file, and searches the next one."""
    import errno

    from bastion_wire.protocol import Done, SearchFile, SearchRequest
    from broker.pool.outcome import engine_stopped
    from workers import search as worker_search

    paths = []
    for number in range(3):
        paths.append(tmp_path / f"f{number}.log")
        paths[-1].write_text("Failed password\n" * (number + 1))
    real_pump = worker_search.EngineRun._pump

    def pump(self: Any, *args: Any) -> None:
        if self.files[0].index == 1:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        real_pump(self, *args)

    monkeypatch.setattr(worker_search.EngineRun, "_pump", pump)
    sent: list[Any] = []
    fds = [os.open(path, os.O_RDONLY) for path in paths]
    request = SearchRequest(
        pattern="Failed", max_lines=100, max_line_bytes=4096, count_only=True, files=[SearchFile()] * 3
    )
    worker_search.search(request, fds, ["/usr/bin/grep"], sent.append)
    (done,) = [message for message in sent if isinstance(message, Done)]
    assert done.counts == [1, 0, 3] and [(skip.file, skip.cause) for skip in done.skipped] == [(1, "ENOMEM")]
    assert "memory limit of 256 MiB" in engine_stopped("ENOMEM", False, 256 << 20)
    assert not [child for child in psutil.Process().children() if child.name() == "grep"]  # every engine reaped


async def test_the_output_cap_is_shared_by_the_batches_of_a_call(tmp_path: Path) -> None:
    """Each batch may send only the bytes the call has left: the second one, given what the
    first left of 45,000, overruns it and no third worker starts."""
    glob = collector(tmp_path, 96, line="sshd[8]: Failed password " + "x" * 270 + "\n", lines=3)  # ~30 KB a batch
    async with bastion_client(policy_for(tmp_path, glob, max_output_bytes=45_000)) as client:
        data = await query(client, log_path=str(glob), pattern="Failed", max_lines=1000)
    assert data["truncated_reason"] == "max_output_bytes"
    end = last_end(tmp_path)
    assert end["workers"] == 2 and end["outcome"] == "output_capped" and end["files"] == 64
