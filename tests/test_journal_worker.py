"""The "journal" worker kind (workers/journal.py, sandbox_profiles/journal.toml).

Its handler run in process against journal files written by the real
systemd-journal-remote (tests/journal_fixtures.py), compared with what
`journalctl --file ... -g PATTERN -o json` finds in the same files (journalctl's -g is
PCRE, grep's -E is POSIX: the patterns here mean the same in both); its profile, which
is grep's plus fstatfs; serve starting no journal worker for a policy without journal
sources; and a real confined worker of the kind, started through the launcher, reading a
fixture journal from a descriptor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bastion_wire.protocol import (
    HEADER,
    MAX_JOURNAL_FILES,
    MAX_LINE_BYTES,
    Done,
    Failed,
    JournalEntries,
    JournalEntry,
    JournalRequest,
    ProtocolError,
    encode_frame,
    from_worker_reader,
    to_worker_reader,
)
from broker.policy import load_policy
from broker.pool.launcher import spawn_one
from broker.pool.worker_process import WorkerResult, start_worker
from broker.sandbox.host import WORKER_KINDS, cgroup_host, kinds_for
from broker.sandbox.plan import build_plan
from broker.sandbox.profile import load_profile
from tests import journal_fixtures as fixtures
from tests.conftest import own_descriptors_only, write_policy
from workers import journal
from workers.journal import search_journal

pytestmark = pytest.mark.skipif(
    not fixtures.JOURNAL_REMOTE.exists() or shutil.which("journalctl") is None,
    reason="needs systemd-journal-remote and journalctl (make deps)",
)
GREP = ["/usr/bin/grep"]
FAILED = "Failed password"
Row = tuple[int, str, str]  # time, host, message (sanitised)


def journalctl(files: Sequence[Path], pattern: str, *args: str, case: str = "true") -> list[dict[str, Any]]:
    command = [
        "journalctl",
        "--no-pager",
        "--all",
        "-o",
        "json",
        f"--case-sensitive={case}",
        "-g",
        pattern,
        *(f"--file={path}" for path in files),
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={"TZ": "UTC", "PATH": "/usr/bin"})
    assert done.returncode in (0, 1), done.stderr  # 1: nothing matched
    return [json.loads(line) for line in done.stdout.splitlines()]


def _message(value: str | list[int]) -> str:
    # journalctl's JSON holds bytes that are not text as a list of numbers: sanitise like the worker.
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return raw.decode("utf-8", "replace").replace("\n", "\\x0a")


def rows(entries: list[dict[str, Any]]) -> list[Row]:
    return [(int(e["__REALTIME_TIMESTAMP"]), e.get("_HOSTNAME", ""), _message(e["MESSAGE"])) for e in entries]


def run(files: Sequence[Path], pattern: str, **options: Any) -> tuple[list[JournalEntry], Done | Failed]:
    """The handler in process on fresh descriptors of `files`: the entries sent and the last frame."""
    request = JournalRequest(pattern=pattern, limit=options.pop("limit", 10_000), max_line_bytes=4096, **options)
    sent: list[msgspec.Struct] = []
    with own_descriptors_only():  # the harness's reaper opens none meanwhile
        fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in files]
        search_journal(request, fds, GREP, sent.append)
        for fd in fds:
            with pytest.raises(OSError):
                os.fstat(fd)  # the handler closed every descriptor
    entries = [entry for frame in sent[:-1] if isinstance(frame, JournalEntries) for entry in frame.entries]
    assert len(sent) - 1 == sum(isinstance(frame, JournalEntries) for frame in sent)  # only entries, then one end
    last = sent[-1]
    assert isinstance(last, Done | Failed)
    return entries, last


def as_rows(entries: list[JournalEntry]) -> list[Row]:
    return [(entry.time_usec, entry.host, entry.message) for entry in entries]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough entries for many sentinel rounds (journal.SENTINEL_EVERY)."""
    path = tmp_path_factory.mktemp("big") / "big.journal"
    return fixtures.write_journal(path, fixtures.host_entries("big1", 0, 6000))


# --- the handler, against journalctl ----------------------------------------------------


def test_failed_password_entries_are_those_journalctl_finds(journal_web: Path) -> None:
    entries, done = run([journal_web], FAILED)
    expected = journalctl([journal_web], FAILED)
    assert len(expected) == 48 and as_rows(entries) == rows(expected)
    assert done == Done(more=False, notes=[], host_counts=None)
    first = entries[0]
    assert (first.host, first.unit, first.identifier, first.priority) == ("web1", "ssh.service", "sshd", 6)
    assert first.pid == int(expected[0]["_PID"])


@pytest.mark.parametrize(
    ("pattern", "options", "args"),
    [
        ("invalid user (admin|test) from", {}, []),
        ("203\\.0\\.113\\.[0-9]+ port", {"order": "newest"}, ["--reverse"]),
        ("Killed process", {}, []),  # a two-line message, one line to grep
        ("not UTF-8", {}, []),
        ("ssh2$", {"identifiers": ["sshd"], "max_priority": 6}, ["-t", "sshd", "--priority=6"]),
        ("[0-9]", {"units": ["cron.service"]}, ["_SYSTEMD_UNIT=cron.service"]),
        ("error", {"boots": [fixtures.boot_id(0, 1)]}, [f"_BOOT_ID={fixtures.boot_id(0, 1)}"]),
        ("^Failed", {"hostnames": ["web1"]}, ["_HOSTNAME=web1"]),
        ("", {"max_priority": 3}, ["--priority=3"]),
    ],
)
def test_patterns_and_filters_equal_journalctl(
    journal_web: Path, pattern: str, options: dict[str, Any], args: list[str]
) -> None:
    entries, done = run([journal_web], pattern, **options)
    expected = journalctl([journal_web], pattern, *args)
    assert expected and as_rows(entries) == rows(expected)
    assert isinstance(done, Done) and not done.more


def test_a_time_window_and_newest_first(journal_web: Path) -> None:
    since, until = fixtures.BASE_USEC + 30 * fixtures.STEP_USEC, fixtures.BASE_USEC + 75 * fixtures.STEP_USEC
    entries, _ = run([journal_web], FAILED, since_usec=since, until_usec=until, order="newest")
    window = [f"--since=@{since // 10**6}.{since % 10**6:06d}", f"--until=@{until // 10**6}.{until % 10**6:06d}"]
    expected = journalctl([journal_web], FAILED, *window, "--reverse")
    assert expected and as_rows(entries) == rows(expected)


def test_ignore_case(journal_web: Path) -> None:
    entries, _ = run([journal_web], "failed PASSWORD for ROOT", ignore_case=True)
    expected = journalctl([journal_web], "failed PASSWORD for ROOT", case="false")
    assert expected and as_rows(entries) == rows(expected)
    assert run([journal_web], "failed PASSWORD for ROOT")[0] == []


def test_files_interleave_in_time(journal_trio: list[Path]) -> None:
    entries, _ = run(journal_trio, FAILED)
    expected = journalctl(journal_trio, FAILED)
    assert {entry.host for entry in entries} == {"host-000", "host-001", "host-002"}
    assert as_rows(entries) == rows(expected)


@pytest.mark.parametrize(("limit", "more"), [(1, True), (7, True), (48, False), (1000, False)])
def test_the_limit_stops_at_that_many_matches(journal_web: Path, limit: int, more: bool) -> None:
    entries, done = run([journal_web], FAILED, limit=limit)
    assert as_rows(entries) == rows(journalctl([journal_web], FAILED))[:limit]
    assert isinstance(done, Done) and done.more is more


def test_count_only_counts_per_host(journal_trio: list[Path]) -> None:
    entries, done = run(journal_trio, FAILED, count_only=True)
    expected = Counter(entry["_HOSTNAME"] for entry in journalctl(journal_trio, FAILED))
    assert entries == [] and isinstance(done, Done) and done.host_counts == dict(expected)
    _, none = run(journal_trio, "no such text", count_only=True)
    assert isinstance(none, Done) and none.host_counts == {}


def test_count_only_counts_a_bounded_number_of_hosts(journal_trio: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "MAX_COUNTED_HOSTS", 2)
    _, done = run(journal_trio, FAILED, count_only=True)
    assert isinstance(done, Done) and done.host_counts == {"host-000": 16, "host-001": 16}
    assert done.notes == ["16 matching entries of more than 2 hosts not counted"]


def test_many_entries_are_held_a_bounded_number_at_a_time(big: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[int] = []
    judged = journal.Search.judged

    def watched(self: journal.Search, line_no: int) -> None:
        held.append(len(self.pending))
        judged(self, line_no)

    monkeypatch.setattr(journal.Search, "judged", watched)
    entries, done = run([big], "EXT4-fs error")
    assert as_rows(entries) == rows(journalctl([big], "EXT4-fs error")) and len(entries) == 600
    assert max(held) <= (journal.MAX_UNJUDGED + 2) * journal.SENTINEL_EVERY + 64
    assert isinstance(done, Done)


def test_a_pattern_that_matches_sentinels_too_returns_entries_only(big: Path) -> None:
    entries, done = run([big], ".*", count_only=True)
    assert isinstance(done, Done) and done.host_counts == {"big1": 6000}


def test_a_message_cannot_pass_for_a_sentinel(tmp_path: Path) -> None:
    # The sentinel is a lone \x01; a message that is one is sanitised to visible text first.
    entries = [
        dataclasses.replace(entry, message="\x01" if n % 2 else "\x01\nFailed password")
        for n, entry in enumerate(fixtures.host_entries("web1", 0, 3 * journal.SENTINEL_EVERY))
    ]
    path = fixtures.write_journal(tmp_path / "sentinels.journal", entries)
    found, done = run([path], "x01", limit=100_000)
    assert len(found) == len(entries) and isinstance(done, Done)
    assert {entry.message for entry in found} == {"\\x01", "\\x01\\x0aFailed password"}


def test_newest_first_with_a_limit(journal_trio: list[Path]) -> None:
    entries, done = run(journal_trio, "for root", order="newest", limit=5)
    assert as_rows(entries) == rows(journalctl(journal_trio, "for root", "--reverse"))[:5]
    assert isinstance(done, Done) and done.more


def test_the_largest_entries_still_fit_frames(tmp_path: Path) -> None:
    # 64 KiB of control bytes sanitises to 256 KiB of escapes: batches stay within a frame.
    base = fixtures.host_entries("web1", 0, 10)
    entries = [dataclasses.replace(entry, message=b"\x1b" * MAX_LINE_BYTES) for entry in base]
    path = fixtures.write_journal(tmp_path / "wide.journal", entries)
    request = JournalRequest(pattern="x1b", limit=100, max_line_bytes=MAX_LINE_BYTES)
    frames: list[bytes] = []  # encode_frame refuses one over MAX_FRAME_BYTES
    search_journal(request, [os.open(path, os.O_RDONLY | os.O_CLOEXEC)], GREP, lambda m: frames.append(encode_frame(m)))
    replies = from_worker_reader().feed(b"".join(frames))
    found = [entry for reply in replies if isinstance(reply, JournalEntries) for entry in reply.entries]
    assert len(replies) > 2 and isinstance(replies[-1], Done)
    assert len(found) == 10 and all(entry.message == "\\x1b" * MAX_LINE_BYTES for entry in found)


def test_a_long_message_is_cut_and_says_so(tmp_path: Path) -> None:
    entry = dataclasses.replace(fixtures.host_entries("web1", 0, 1)[0], message="y" * 9000)
    path = fixtures.write_journal(tmp_path / "long.journal", [entry])
    entries, _ = run([path], "yyy")
    assert len(entries) == 1 and entries[0].message == "y" * 4096 + "…[message cut at 4096 bytes]"


def test_a_file_that_is_not_a_journal_is_a_note(journal_web: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.journal"
    bad.write_bytes(b"LPKSHHRH" + bytes(500))
    entries, done = run([journal_web, bad], FAILED)
    assert len(entries) == 48 and isinstance(done, Done)
    assert len(done.notes) == 1 and done.notes[0].startswith("journal file 2 of 2 could not be opened")


def test_a_bad_pattern_is_grep_s_error(journal_web: Path) -> None:
    _, failed = run([journal_web], "(unclosed")
    assert isinstance(failed, Failed) and failed.code == "engine_error"


@pytest.mark.parametrize(
    "output",
    ["99999:not fed", "1:x\n1:x", "no line number", "0:zero"],
    ids=["not-fed", "twice", "garbage", "zero"],
)
def test_an_engine_that_reports_what_grep_would_not_is_a_protocol_error(
    journal_web: Path, tmp_path: Path, output: str
) -> None:
    engine = tmp_path / "engine"
    engine.write_text("#!/bin/sh\nprintf '" + output.replace("\n", "\\n") + "\\n'\nexec cat >/dev/null\n")
    engine.chmod(0o755)
    request = JournalRequest(pattern=FAILED, limit=10, max_line_bytes=4096)
    with own_descriptors_only():
        fd = os.open(journal_web, os.O_RDONLY | os.O_CLOEXEC)
        with pytest.raises(ProtocolError):
            search_journal(request, [fd], [str(engine)], [].append)
        with pytest.raises(OSError):
            os.fstat(fd)  # closed all the same


def test_no_descriptor_is_a_bad_request() -> None:
    request = JournalRequest(pattern=FAILED, limit=1, max_line_bytes=4096)
    sent: list[msgspec.Struct] = []
    search_journal(request, [], GREP, sent.append)
    assert sent == [Failed("bad_request", "a journal request needs 1..64 descriptors")]


@pytest.mark.parametrize(
    "wrong",
    [
        {"limit": 0},
        {"max_line_bytes": 1 << 20},
        {"max_priority": 8},
        {"since_usec": -1},
        {"units": ["x"] * 257},
        {"identifiers": [""]},
        {"order": "random"},
        {"unknown": 1},
    ],
)
def test_the_wire_refuses_a_request_out_of_range(wrong: dict[str, Any]) -> None:
    base = {"type": "journal", "pattern": FAILED, "limit": 10, "max_line_bytes": 4096}

    def frame(fields: dict[str, Any]) -> bytes:
        payload = msgspec.msgpack.encode(fields)
        return HEADER.pack(len(payload)) + payload

    assert isinstance(to_worker_reader().feed(frame(base))[0], JournalRequest)  # control
    with pytest.raises(ProtocolError):
        to_worker_reader().feed(frame(base | wrong))


# --- the profile and when serve starts the kind ----------------------------------------


def test_the_profile_is_greps_plus_fstatfs() -> None:
    grep, kind = load_profile("grep"), load_profile("journal")
    assert set(kind.seccomp.allow) - set(grep.seccomp.allow) == {"fstatfs"}
    assert set(grep.seccomp.allow) - set(kind.seccomp.allow) == set()
    assert kind.seccomp.conditional == grep.seccomp.conditional
    assert set(kind.seccomp.errno.items()) <= set(grep.seccomp.errno.items())
    assert kind.executables == ["/usr/bin/grep"] and kind.optional_executables == []
    assert (kind.namespaces, kind.filesystem, kind.landlock, kind.layers, kind.cgroup) == (
        grep.namespaces,
        grep.filesystem,
        grep.landlock,
        grep.layers,
        grep.cgroup,
    )
    # 64 files at ~8 MiB of mappings each, the worker and grep; 64 descriptors and spare.
    assert kind.rlimits.address_space_bytes == 1 << 30 and kind.rlimits.open_files >= 64 + 16
    assert msgspec.structs.replace(kind.rlimits, open_files=grep.rlimits.open_files) == grep.rlimits


def test_serve_starts_no_journal_worker_without_journal_sources(tmp_path: Path) -> None:
    assert "journal" in WORKER_KINDS and kinds_for(None) == WORKER_KINDS
    policy = load_policy(str(write_policy(tmp_path, [tmp_path / "a.log"])))
    assert kinds_for(policy) == ("grep", "resource")


# --- a real confined worker ---------------------------------------------------------------


async def confined_call(files: list[Path], request: JournalRequest, deadline_s: float) -> WorkerResult:
    """One real journal worker, confined by every layer through the launcher, over `files`."""
    cgroups = cgroup_host()
    plan = build_plan(load_profile("journal"), "auto", [], cgroups)
    fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in files]
    worker = None
    try:
        worker = await start_worker(await spawn_one(plan, cgroups))
        return await worker.call(request, fds, deadline_s, 1 << 24)
    finally:
        for fd in fds:
            os.close(fd)
        if worker is not None and not worker.reaped:
            await worker.finish()
        cgroups.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the full layer set needs root (see test_rootless.py)")
@pytest.mark.usefixtures("own_workers")
@pytest.mark.anyio
async def test_a_confined_journal_worker_returns_the_failed_password_entries(
    journal_web: Path, journal_trio: list[Path]
) -> None:
    cgroups = cgroup_host()
    plan = build_plan(load_profile("journal"), "auto", [], cgroups)
    files = [journal_web, *journal_trio]
    fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in files]
    worker = None
    try:
        worker = await start_worker(await spawn_one(plan, cgroups))
        request = JournalRequest(pattern=FAILED, limit=10_000, max_line_bytes=4096)
        result = await worker.call(request, fds, 30.0, 1 << 24)
    finally:
        for fd in fds:
            os.close(fd)
        if worker is not None and not worker.reaped:
            await worker.finish()
        cgroups.close()
    assert result.outcome == "ok", result
    expected = rows(journalctl(files, FAILED))
    assert len(expected) > 48 and as_rows(result.entries) == expected
    assert result.notes == [] and not result.more


@pytest.mark.skipif(os.geteuid() != 0, reason="the full layer set needs root (see test_rootless.py)")
@pytest.mark.usefixtures("own_workers")
@pytest.mark.anyio
async def test_a_confined_worker_reads_64_collector_files_within_its_limits(tmp_path: Path) -> None:
    # The profile's address space and descriptor limits are sized for this many files.
    files = fixtures.build_collector(tmp_path / "collector", MAX_JOURNAL_FILES, 5)
    request = JournalRequest(pattern=FAILED, limit=10_000, max_line_bytes=4096, count_only=True)
    result = await confined_call(files, request, 60.0)
    assert result.outcome == "ok", result
    expected = Counter(entry["_HOSTNAME"] for entry in journalctl(files, FAILED))
    assert len(expected) == MAX_JOURNAL_FILES and result.host_counts == dict(expected) and result.notes == []
