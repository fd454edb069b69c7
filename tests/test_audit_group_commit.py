"""Group commit of the audit log: results wait for their own record's sync, syncs are shared
and run off the event loop, and a failed sync withholds the results it covered."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from broker.audit import group_commit
from broker.audit.group_commit import GroupCommit
from broker.audit.log import AuditError, AuditLog
from broker.audit.verify import verify
from tests.test_faults import FakePool, ends, log_file, make_bastion, reply_text

__all__ = ["log_file"]  # the fixture, shared with test_faults

pytestmark = pytest.mark.anyio


class StalledDisk:
    """A sync that blocks (in its thread) until released, counting what it was asked to sync."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0
        self.fail = fail

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        if not self.release.wait(10):
            raise OSError(110, "test disk never released")
        if self.fail:
            raise OSError(5, "Input/output error")


async def _until(predicate: Any, timeout_s: float = 5) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():
            await anyio.sleep(0.005)


async def test_a_waiter_returns_only_after_its_record_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = StalledDisk()
    monkeypatch.setattr(group_commit, "sync_file", disk)
    audit = AuditLog(str(tmp_path / "audit.jsonl"))
    commit = GroupCommit(audit)
    seq = audit.write("end", sync=False)
    done: list[int] = []

    async def wait() -> None:
        await commit.durable(seq)
        done.append(seq)

    async with anyio.create_task_group() as group:
        group.start_soon(wait)
        await _until(disk.entered.is_set)
        ticks = 0
        for _ in range(20):  # the event loop runs on while the disk is busy
            await anyio.sleep(0.005)
            ticks += 1
        assert done == [] and ticks == 20 and audit.durable_seq < seq
        disk.release.set()
    assert done == [seq] and audit.durable_seq == seq
    audit.close()


async def test_concurrent_waiters_share_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = StalledDisk()
    monkeypatch.setattr(group_commit, "sync_file", disk)
    audit = AuditLog(str(tmp_path / "audit.jsonl"))
    commit = GroupCommit(audit)
    finished: list[int] = []

    async def call() -> None:
        seq = audit.write("end", sync=False)
        await commit.durable(seq)
        finished.append(seq)

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await _until(disk.entered.is_set)  # the first sync is in flight: the other 15 queue behind it
        for _ in range(15):
            group.start_soon(call)
        await anyio.sleep(0.05)
        assert finished == []
        disk.release.set()
    assert sorted(finished) == list(range(1, 17))
    assert commit.syncs == disk.calls == 2  # one for the first record, one for the 15 written meanwhile
    audit.close()


async def test_a_record_written_during_a_sync_waits_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = StalledDisk()
    monkeypatch.setattr(group_commit, "sync_file", disk)
    audit = AuditLog(str(tmp_path / "audit.jsonl"))
    commit = GroupCommit(audit)
    first = audit.write("end", sync=False)
    states: dict[str, int] = {}

    async def late() -> None:
        second = audit.write("end", sync=False)
        await commit.durable(second)
        states["late"] = audit.durable_seq

    async with anyio.create_task_group() as group:
        group.start_soon(commit.durable, first)
        await _until(disk.entered.is_set)
        group.start_soon(late)
        await anyio.sleep(0.02)
        disk.release.set()
    assert states["late"] == 2 and commit.syncs == 2  # the first sync could not have covered it
    audit.close()


async def test_a_failed_sync_fails_its_waiters_and_the_next_sync_covers_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = StalledDisk(fail=True)
    disk.release.set()
    monkeypatch.setattr(group_commit, "sync_file", disk)
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    commit = GroupCommit(audit)
    seq = audit.write("end", sync=False)
    with pytest.raises(AuditError, match="cannot sync audit log"):
        await commit.durable(seq)
    assert audit.durable_seq == 0
    disk.fail = False
    later = audit.write("end", sync=False)
    await commit.durable(later)
    assert audit.durable_seq == later == 2
    audit.close()
    assert verify([str(path)]).problem is None  # nothing was cut out of the chain


async def test_rotation_during_a_sync_keeps_the_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = StalledDisk()
    monkeypatch.setattr(group_commit, "sync_file", disk)
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), max_bytes=600, keep=9)
    commit = GroupCommit(audit)
    seq = audit.write("end", sync=False, pad="x" * 200)
    async with anyio.create_task_group() as group:
        group.start_soon(commit.durable, seq)
        await _until(disk.entered.is_set)
        for _ in range(4):  # rotates (and closes the descriptor being synced) while the sync runs
            audit.write("end", sync=False, pad="y" * 200)
        disk.release.set()
    last = audit.write("end", sync=False)
    await commit.durable(last)
    audit.close()
    rotated = sorted(tmp_path.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    files = [str(p) for p in [*rotated, path]]  # oldest first
    assert 2 <= len(files) < 9
    assert verify(files).problem is None


async def test_a_call_is_withheld_until_its_end_record_is_synced(
    tmp_path: Path, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = StalledDisk()
    monkeypatch.setattr(group_commit, "sync_file", disk)
    bastion = make_bastion(tmp_path, log_file, FakePool([]))
    results: list[Any] = []

    async def call() -> None:
        results.append(await bastion.call_tool("query_logs", {"log_path": str(log_file), "pattern": "first"}))

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await _until(disk.entered.is_set, timeout_s=10)
        await anyio.sleep(0.05)
        assert results == [] and [end["outcome"] for end in ends(tmp_path)] == ["ok"]  # written, not yet synced
        disk.release.set()
    assert not results[0].is_error and "first matching line" in reply_text(results[0])


@pytest.mark.parametrize("arguments", [{"pattern": "first"}, {"log_path": "/etc/shadow", "pattern": "x"}])
async def test_a_call_whose_sync_fails_is_withheld(
    tmp_path: Path, log_file: Path, monkeypatch: pytest.MonkeyPatch, arguments: dict[str, str]
) -> None:
    """A result and a refusal alike: neither leaves before its record is durable."""
    disk = StalledDisk(fail=True)
    disk.release.set()
    monkeypatch.setattr(group_commit, "sync_file", disk)
    bastion = make_bastion(tmp_path, log_file, FakePool([]))
    result = await bastion.call_tool("query_logs", {"log_path": str(log_file), **arguments})
    assert result.is_error and reply_text(result) == "refused: the audit log cannot be written, so no call can run"
    assert "first matching line" not in reply_text(result) and disk.calls == 1
