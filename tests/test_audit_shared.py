"""Several servers on one audit log: each append takes the file's lock and chains to the
file's last record, whoever wrote it, so the file stays one chain that `audit verify`
checks, with every record naming the server instance that wrote it."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from broker.audit import log_file
from broker.audit.log import AuditError, AuditLog
from broker.audit.verify import summary, verify
from tests.conftest import ROOT, bastion_client, read_audit, write_policy

WRITER = """
import sys
from broker.audit.log import AuditLog
path, name, count, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
log = AuditLog(path, max_bytes=max_bytes, keep=50, instance=name)
print("ready", flush=True)
sys.stdin.readline()  # start together
for index in range(count):
    log.write("end", sync=index % 10 == 0, writer=name, n=index, pad="x" * (index % 7) * 20)
log.close()
"""


def oldest_first(path: Path) -> list[str]:
    rotated = sorted(path.parent.glob(path.name + ".*[0-9]"), key=lambda p: -int(p.suffix[1:]))
    return [str(p) for p in [*rotated, path]]


def records(paths: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for name in paths for line in Path(name).read_text().splitlines()]


def run_writers(path: Path, count: int, writers: int = 2, max_bytes: int = 0) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), f"w{index}", str(count), str(max_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for index in range(writers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.wait(60) == 0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(5)


def test_two_writers_in_one_process_form_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first, second = AuditLog(str(path), instance="a"), AuditLog(str(path), instance="b")
    seqs = [log.write("end", n=index) for index in range(6) for log in (first, second)]
    first.close()
    second.close()
    assert seqs == list(range(1, 13))
    assert [record["server"] for record in read_audit(path)] == ["a", "b"] * 6
    assert verify([str(path)]).problem is None


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    run_writers(path, 400)
    report = verify([str(path)])
    assert report.problem is None and report.records == 800
    written = records([str(path)])
    for name in ("w0", "w1"):
        assert [record["n"] for record in written if record["server"] == name] == list(range(400))
    assert "2 server instances" in summary(report, 1)


def test_two_processes_rotating_at_once_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    run_writers(path, 300, max_bytes=16_000)
    files = oldest_first(path)
    assert len(files) > 5 and not (tmp_path / "audit.jsonl.rotating").exists()
    report = verify(files)
    assert report.problem is None, report.problem
    written = records(files)
    continued = [record for record in written if record["event"] == "audit_continued"]
    assert len(continued) == len(files) - 1  # one per new file, never two
    assert all(record["reason"] == "size_limit" for record in continued)
    for name in ("w0", "w1"):
        assert [record["n"] for record in written if record.get("writer") == name] == list(range(300))


def test_an_external_rename_is_continued_once_by_whichever_server_comes_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first, second = AuditLog(str(path), instance="a"), AuditLog(str(path), instance="b")
    first.write("end", n=1)
    second.write("end", n=2)
    os.rename(path, tmp_path / "audit.jsonl.1")  # logrotate's rename + create
    path.touch(0o600)
    second.write("end", n=3)
    first.write("end", n=4)
    first.close()
    second.close()
    new = read_audit(path)
    assert [record["event"] for record in new] == ["audit_continued", "end", "end"]
    assert new[0]["reason"] == "renamed_externally" and new[0]["server"] == "b"
    assert verify([str(tmp_path / "audit.jsonl.1"), str(path)]).problem is None


def test_a_lock_held_for_too_long_refuses_the_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    monkeypatch.setattr(log_file, "LOCK_WAIT_S", 0.2)
    stuck = os.open(path, os.O_RDONLY)
    fcntl.flock(stuck, fcntl.LOCK_EX)
    try:
        with pytest.raises(AuditError, match="held its lock for over 0.2 s"):
            log.write("end")
    finally:
        os.close(stuck)
    assert log.write("end") == 1  # free again: nothing half-written in between
    log.close()
    assert verify([str(path)]).problem is None


def test_a_foreign_line_at_the_end_is_left_for_verify_and_our_chain_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write("end")
    with open(path, "ab") as file:
        file.write(b"not a record, and torn")
    assert log.write("end") == 2
    log.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == b"not a record, and torn" and json.loads(lines[2])["seq"] == 2  # our record stays whole
    assert verify([str(path)]).problem.kind == "inserted"  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_two_servers_on_one_policy_serve_and_share_one_chain(tmp_path: Path) -> None:
    """An IDE and a desktop host, each starting `bastion serve` with the same policy."""
    log = tmp_path / "auth.log"
    log.write_text("Dec  1 10:00:00 host sshd[1]: Failed password for root from 10.0.0.5 port 22 ssh2\n")
    policy = write_policy(tmp_path, [log])
    results: list[str] = []

    async def host() -> None:
        async with bastion_client(policy) as client:
            for _ in range(5):
                result = await client.call_tool("query_logs", {"log_path": str(log), "pattern": "Failed"})
                assert not result.is_error, result
                results.append("ok")

    async with anyio.create_task_group() as group:
        group.start_soon(host)
        group.start_soon(host)
    assert results == ["ok"] * 10
    audit = tmp_path / "audit.jsonl"
    report = verify([str(audit)])
    assert report.problem is None
    written = read_audit(audit)
    servers = {record["server"] for record in written}
    assert len(servers) == 2
    for server in servers:
        events = [record["event"] for record in written if record["server"] == server]
        assert events[0] == "server_start" and events[-1] == "server_stop" and events.count("end") == 5
