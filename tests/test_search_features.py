"""query_logs beyond one plain file, end to end through real sandboxed workers:
rotations (plain and gzip), globs, time windows, context, case, counts, order,
and the limits around them (gzip bomb, truncated gzip, rotation mid-search)."""

from __future__ import annotations

import gzip
import os
import random
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import bastion_client, read_audit, write_policy
from workers import search_input

pytestmark = pytest.mark.anyio


def stamp(day: int, hour: int, minute: int = 0, month: str = "Nov") -> str:
    return f"{month} {day:>2} {hour:02d}:{minute:02d}:00"


def unix(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def write_day(path: Path, day: int, attacker: str, compress: bool = False, mtime_day: int | None = None) -> None:
    lines = []
    for hour in range(24):
        lines.append(f"{stamp(day, hour)} web-01 sshd[{hour}]: Failed password for root from {attacker} port 22 ssh2")
        lines.append(f"{stamp(day, hour, 30)} web-01 CRON[{hour}]: session opened for user root")
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    when = unix(2026, 11, mtime_day or day, 23, 59)
    os.utime(path, (when, when))


NO_RATE_LIMIT = "[rate_limit]\ncalls = 100000\nwindow_s = 1\nglobal_calls = 100000\nglobal_window_s = 1\n"


def policy_file(tmp_path: Path, entries: list[dict[str, Any]], **limits: Any) -> Path:
    return write_policy(tmp_path, entries, toml=NO_RATE_LIMIT, **limits)


@pytest.fixture
def rotated(tmp_path: Path) -> Path:
    """auth.log (Nov 24), .1 (Nov 23), .2.gz (Nov 22), .3.gz (Nov 21): one attacker per day."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write_day(logs / "auth.log", 24, "45.155.205.233")
    write_day(logs / "auth.log.1", 23, "185.220.101.47")
    write_day(logs / "auth.log.2.gz", 22, "193.32.162.157", compress=True)
    write_day(logs / "auth.log.3.gz", 21, "141.98.11.23", compress=True)
    return logs / "auth.log"


async def query(client: Any, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool("query_logs", arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def query_error(client: Any, **arguments: Any) -> str:
    result = await client.call_tool("query_logs", arguments)
    assert result.is_error
    return result.content[0].text


async def test_rotations_are_one_log_oldest_first_with_file_names(tmp_path: Path, rotated: Path) -> None:
    policy = policy_file(tmp_path, [{"path": str(rotated), "rotations": True}])
    async with bastion_client(policy) as client:
        data = await query(client, log_path=str(rotated), pattern="Failed password", max_lines=1000)
    names = [Path(f["path"]).name for f in data["files"]]
    assert names == ["auth.log.3.gz", "auth.log.2.gz", "auth.log.1", "auth.log"]
    assert [f["compressed"] for f in data["files"]] == [True, True, False, False]
    assert len(data["lines"]) == 96 and data["truncated"] is False
    firsts = [line for line in data["lines"] if line["line_no"] == 1]
    assert [Path(line["file"]).name for line in firsts] == names
    assert "141.98.11.23" in firsts[0]["text"] and "45.155.205.233" in firsts[-1]["text"]


async def test_newest_first_returns_the_most_recent_and_stops_early(tmp_path: Path, rotated: Path) -> None:
    policy = policy_file(tmp_path, [{"path": str(rotated), "rotations": True}])
    async with bastion_client(policy) as client:
        data = await query(client, log_path=str(rotated), pattern="Failed password", max_lines=30, order="newest_first")
    assert data["truncated_reason"] == "max_lines"
    lines = data["lines"]
    assert len(lines) == 30
    assert [Path(line["file"]).name for line in lines[:24]] == ["auth.log"] * 24
    assert lines[0]["line_no"] == 47 and lines[23]["line_no"] == 1  # newest first within the file
    assert {Path(line["file"]).name for line in lines[24:]} == {"auth.log.1"}
    end = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"][-1]
    # The answer was complete after the probe of auth.log.2.gz at most. These small rotations
    # share one engine (a joined run), whose feeder reads ahead of it by at most its pipe and
    # one chunk: past the answer, nothing more than that is read.
    read_ahead = search_input.JOINED_PIPE_BYTES + search_input.READ_CHUNK
    assert end["bytes_scanned"] <= rotated.stat().st_size + (rotated.parent / "auth.log.1").stat().st_size + read_ahead


async def test_oldest_first_early_stop_does_not_read_newer_files(tmp_path: Path, rotated: Path) -> None:
    policy = policy_file(tmp_path, [{"path": str(rotated), "rotations": True}])
    async with bastion_client(policy) as client:
        data = await query(client, log_path=str(rotated), pattern="Failed password", max_lines=5)
    assert len(data["lines"]) == 5 and data["truncated_reason"] == "max_lines"
    assert {Path(line["file"]).name for line in data["lines"]} == {"auth.log.3.gz"}


async def test_time_window_across_rotations(tmp_path: Path, rotated: Path) -> None:
    policy = policy_file(tmp_path, [{"path": str(rotated), "rotations": True}])
    async with bastion_client(policy) as client:
        data = await query(
            client,
            log_path=str(rotated),
            pattern="Failed password",
            max_lines=1000,
            since="2026-11-22T12:00:00Z",
            until="2026-11-23T05:00:00Z",
        )
        counted = await query(
            client,
            log_path=str(rotated),
            pattern="Failed password",
            count_only=True,
            since="2026-11-22T12:00:00Z",
            until="2026-11-23T05:00:00Z",
        )
        bad = await query_error(client, log_path=str(rotated), pattern="x", since="yesterday")
        reversed_window = await query_error(
            client, log_path=str(rotated), pattern="x", since="2026-11-23", until="2026-11-22"
        )
    texts = [line["text"] for line in data["lines"]]
    assert len(texts) == 12 + 6  # Nov 22 12:00-23:00, Nov 23 00:00-05:00
    assert texts[0].startswith("Nov 22 12:00:00") and texts[-1].startswith("Nov 23 05:00:00")
    assert counted["total_matches"] == 18 and [f["matches"] for f in counted["files"]] == [0, 12, 6, 0]
    assert "since" in bad and "after" in reversed_window


async def test_year_boundary_and_lines_without_a_timestamp(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(
        "Dec 31 23:58:00 h sshd[1]: Failed password for root from 45.155.205.233\n"
        "    continuation line of the failure above\n"
        "Jan  1 00:01:00 h sshd[2]: Failed password for root from 45.155.205.233\n"
        "    continuation line of the second failure\n"
    )
    when = unix(2027, 1, 1, 6)
    os.utime(log, (when, when))
    policy = policy_file(tmp_path, [{"path": str(log)}])
    async with bastion_client(policy) as client:
        new_year = await query(client, log_path=str(log), pattern="continuation|Failed", since="2027-01-01T00:00:00Z")
        old_year = await query(client, log_path=str(log), pattern="continuation", until="2026-12-31T23:59:59Z")
    assert [line["line_no"] for line in new_year["lines"]] == [3, 4]
    assert [line["line_no"] for line in old_year["lines"]] == [2]


async def test_mixed_timestamp_formats_in_one_glob(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text(
        "2026-11-24T10:00:00Z app: login failed for bob\n2026-11-24T12:00:00+02:00 app: login failed for eve\n"
    )
    (logs / "b.log").write_text(
        '203.0.113.9 - - [24/Nov/2026:09:00:00 +0000] "POST /login HTTP/1.1" 401 12 "-" "curl" login failed\n'
        "<34>1 2026-11-24T11:00:00.000Z host app - - - login failed for mallory\n"
    )
    policy = policy_file(tmp_path, [{"path": str(logs / "*.log")}])
    async with bastion_client(policy) as client:
        data = await query(
            client,
            log_path=str(logs / "*.log"),
            pattern="login failed",
            since="2026-11-24T09:30:00Z",
            until="2026-11-24T10:30:00Z",
        )
        one = await query(client, log_path=str(logs / "b.log"), pattern="login failed")
    assert sorted(line["text"].split()[-1] for line in data["lines"]) == ["bob", "eve"]  # eve: 10:00 UTC
    assert len(one["files"]) == 1 and len(one["lines"]) == 2


async def test_context_ignore_case_and_counts(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {n} {'ERROR disk' if n % 10 == 5 else 'ok'}\n" for n in range(1, 41)))
    policy = policy_file(tmp_path, [{"path": str(log)}], max_context=3)
    async with bastion_client(policy) as client:
        data = await query(client, log_path=str(log), pattern="error", ignore_case=True, context=2, max_lines=2)
        counted = await query(client, log_path=str(log), pattern="ERROR", count_only=True)
        case_sensitive = await query(client, log_path=str(log), pattern="error")
        too_much = await query_error(client, log_path=str(log), pattern="x", context=4)
        both = await query_error(client, log_path=str(log), pattern="x", context=1, count_only=True)
        not_bool = await query_error(client, log_path=str(log), pattern="x", ignore_case="yes")
    assert [(line["line_no"], line["context"]) for line in data["lines"]] == [
        (3, True),
        (4, True),
        (5, False),
        (6, True),
        (7, True),
        (13, True),
        (14, True),
        (15, False),
        (16, True),
        (17, True),
    ]
    assert data["truncated_reason"] == "max_lines"
    assert counted["total_matches"] == 4 and counted["lines"] == []
    assert case_sensitive["lines"] == []
    assert "context must be between 0 and 3" in too_much and "count_only" in both and "ignore_case" in not_bool


async def test_gzip_bomb_is_stopped_and_reported(tmp_path: Path) -> None:
    log = tmp_path / "bomb.log"
    log.write_text("live file\n")
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"Nov 24 00:00:00 h app: the same line again and again\n" * 20000
    parts = [compressor.compress(chunk) for _ in range(200)]  # ~200 MB decompressed
    (tmp_path / "bomb.log.1.gz").write_bytes(b"".join(parts) + compressor.flush())
    policy = policy_file(
        tmp_path, [{"path": str(log), "rotations": True}], max_decompressed_bytes=8 << 20, timeout_s=20
    )
    async with bastion_client(policy) as client:
        data = await query(client, log_path=str(log), pattern="never matches", count_only=True)
    assert any("decompression cap" in note and "bomb.log.1.gz" in note for note in data["notes"]), data["notes"]
    assert data["total_matches"] == 0


async def test_truncated_gzip_searches_what_it_can(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("live\n")
    whole = gzip.compress(b"".join(f"entry {n} payload\n".encode() for n in range(50000)), mtime=0)
    (tmp_path / "app.log.1.gz").write_bytes(whole[: len(whole) // 2])
    policy = policy_file(tmp_path, [{"path": str(log), "rotations": True}])
    async with bastion_client(policy) as client:
        data = await query(client, log_path=str(log), pattern="^entry", count_only=True)
    assert 0 < data["files"][0]["matches"] < 50000
    assert any("truncated gzip" in note and "app.log.1.gz" in note for note in data["notes"])


async def test_a_whole_gzip_rotation_gets_no_note(tmp_path: Path) -> None:
    """Read to its end, a whole file (of one member or two) is not 'truncated': the note
    came after every fully read rotation, and only when the engine read that far."""
    log = tmp_path / "app.log"
    log.write_text("live\n")
    lines = [f"entry {n} payload\n".encode() for n in range(20000)]
    (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(b"".join(lines), mtime=0))
    (tmp_path / "app.log.2.gz").write_bytes(
        gzip.compress(b"".join(lines[:5]), mtime=0) + gzip.compress(b"".join(lines[5:]), mtime=0)
    )
    policy = policy_file(tmp_path, [{"path": str(log), "rotations": True}])
    async with bastion_client(policy) as client:
        data = await query(client, log_path=str(log), pattern="^entry", count_only=True)
    assert sorted(file["matches"] for file in data["files"]) == [0, 20000, 20000] and data["notes"] == []


async def test_a_rotation_mid_search_changes_nothing(tmp_path: Path) -> None:
    """The broker opens every file before the worker starts: renaming them while the (slow)
    search runs neither loses nor duplicates anything."""
    log = tmp_path / "auth.log"
    rng = random.Random(3)
    log.write_text("".join("".join(rng.choice("ab") for _ in range(66)) + "\n" for _ in range(30_000)))
    (tmp_path / "auth.log.1").write_text("older entry a" + "b" * 16 + "c\n")
    policy = policy_file(tmp_path, [{"path": str(log), "rotations": True}], timeout_s=60)
    pattern = "[ab]*a[ab]{16}c"  # slow on the a/b lines (about 1 s), which never match (no c)
    results: list[dict[str, Any]] = []
    async with bastion_client(policy) as client:
        async with anyio.create_task_group() as group:

            async def search() -> None:
                results.append(await query(client, log_path=str(log), pattern=pattern, count_only=True))

            group.start_soon(search)
            with anyio.fail_after(20):
                while not [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "begin"]:
                    await anyio.sleep(0.02)
            await anyio.sleep(0.3)
            os.rename(tmp_path / "auth.log.1", tmp_path / "auth.log.2")
            os.rename(log, tmp_path / "auth.log.1")
            log.write_text("new live file a" + "b" * 16 + "c\n")
    (data,) = results
    assert [Path(f["path"]).name for f in data["files"]] == ["auth.log.1", "auth.log"]  # the names as opened
    assert data["total_matches"] == 1 and data["notes"] == []  # "older", once; the new file was not there yet


async def test_only_rotation_names_of_a_rotations_entry_are_allowed(tmp_path: Path, rotated: Path) -> None:
    (rotated.parent / "auth.log.bak").write_text("secret\n")
    policy = policy_file(tmp_path, [{"path": str(rotated), "rotations": True}])
    async with bastion_client(policy) as client:
        one = await query(client, log_path=str(rotated) + ".1", pattern="Failed", max_lines=1)
        refused = await query_error(client, log_path=str(rotated) + ".bak", pattern="secret")
    assert [Path(f["path"]).name for f in one["files"]] == ["auth.log.1"]
    assert "not an allowlisted log" in refused


def test_rotations_on_a_glob_entry_is_a_policy_error(tmp_path: Path) -> None:
    from broker.policy import PolicyError, load_policy

    policy = policy_file(tmp_path, [{"path": str(tmp_path / "*.log"), "rotations": True}])
    with pytest.raises(PolicyError, match="rotations"):
        load_policy(policy)
