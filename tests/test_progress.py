"""Progress of long searches: notifications/progress through the SDK's own client over stdio,
the worker's Progress frames (rate, content) and the broker's bounds on them.

End to end, a search of a few MB with a DFA-heavy pattern (GNU grep needs about 0.6 s per
MB for it) runs long enough for several reports: with a progressToken the client gets them,
strictly increasing, never past the total (the files' sizes), the last one at the total;
without a token it gets none. The broker's side is tested with stand-in workers
(tests/test_faults.py) that flood Progress frames or report numbers beyond their files.
"""

from __future__ import annotations

import gzip
import os
import random
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from bastion_wire.protocol import Lines, Progress
from broker.pool.worker_process import PROGRESS_FRAMES_PER_S, PROGRESS_FRAMES_SLACK
from broker.transport.client_progress import FINISHED, ClientProgress
from tests.conftest import BASTION, read_audit, write_policy
from tests.test_faults import FakePool, alive, make_bastion
from workers import progress as worker_progress

pytestmark = pytest.mark.anyio

SLOW_PATTERN = "[ab]*a[ab]{16}c"  # no line holds a "c": every byte is scanned, nothing matches
GREP_ONLY = '[search]\nengine = "grep"\n'  # ripgrep runs SLOW_PATTERN too fast for several reports


def slow_text(lines: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(bytes(rng.choice(b"ab") for _ in range(66)) + b"\n" for _ in range(lines))


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("progress") / "big.log"
    path.write_bytes(slow_text(40_000, 3))  # ~2.7 MB: one to two seconds of grep
    return path


@pytest.fixture(scope="module")
def rotated_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """auth.log with .1 and .2.gz, .3.gz rotations: four files searched as one log."""
    directory = tmp_path_factory.mktemp("rotations")
    live = directory / "auth.log"
    live.write_bytes(slow_text(6_000, 1))
    (directory / "auth.log.1").write_bytes(slow_text(6_000, 2))
    for number in (2, 3):
        (directory / f"auth.log.{number}.gz").write_bytes(gzip.compress(slow_text(6_000, 10 + number)))
    return live


def server(policy: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=str(BASTION),
        args=["serve", "--policy", str(policy)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )


class Seen:
    """What the client received: progress callbacks (with when) and every notification."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, float | None, str | None]] = []
        self.times: list[float] = []
        self.notifications: list[str] = []

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.reports.append((progress, total, message))
        self.times.append(time.monotonic())

    async def message(self, message: Any) -> None:
        if not isinstance(message, Exception):
            self.notifications.append(message.method)


async def search(policy: Path, arguments: dict[str, Any], mode: str, with_token: bool) -> tuple[Any, Seen, float]:
    seen = Seen()
    async with Client(server(policy), read_timeout_seconds=60, mode=mode, message_handler=seen.message) as client:
        started = time.monotonic()
        callback = seen.progress if with_token else None
        result = await client.call_tool("query_logs", arguments, progress_callback=callback)
        elapsed = time.monotonic() - started
        await anyio.sleep(0.2)  # a stray notification after the result would arrive meanwhile
    return result, seen, elapsed


def assert_progress(seen: Seen, total: int, files: int, elapsed: float) -> None:
    values = [progress for progress, _, _ in seen.reports]
    assert len(values) >= 2, seen.reports  # at least one during the search, and the final one
    assert all(later > earlier for earlier, later in zip(values, values[1:], strict=False)), values
    assert all(total_seen == total for _, total_seen, _ in seen.reports), (seen.reports, total)
    assert values[-1] == total and all(0 < value <= total for value in values)
    for _, _, message in seen.reports:
        if message == FINISHED:  # the broker's final report, when the last one fell short
            continue
        done, _, of, _ = (message or "").split(" ", 3)
        assert 0 <= int(done) <= files and int(of) == files
    # The client is told at most 4 times a second, plus the final report.
    assert len(values) <= elapsed / 0.25 + 2, (len(values), elapsed)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_long_search_reports_progress_to_a_client_that_asks(tmp_path: Path, big_log: Path, mode: str) -> None:
    policy = write_policy(tmp_path, [big_log], toml=GREP_ONLY, timeout_s=60)
    arguments = {"log_path": str(big_log), "pattern": SLOW_PATTERN}
    result, seen, elapsed = await search(policy, arguments, mode, with_token=True)
    assert not result.is_error and result.structured_content["lines"] == []
    assert_progress(seen, big_log.stat().st_size, 1, elapsed)
    assert seen.notifications.count("notifications/progress") == len(seen.reports)


async def test_progress_over_rotations_counts_every_file(tmp_path: Path, rotated_log: Path) -> None:
    policy = write_policy(tmp_path, [{"path": str(rotated_log), "rotations": True}], toml=GREP_ONLY, timeout_s=60)
    arguments = {"log_path": str(rotated_log), "pattern": SLOW_PATTERN, "count_only": True}
    result, seen, elapsed = await search(policy, arguments, "auto", with_token=True)
    assert not result.is_error and result.structured_content["total_matches"] == 0
    files = sorted(rotated_log.parent.iterdir())
    total = sum(path.stat().st_size for path in files if path.name.startswith("auth.log"))
    assert_progress(seen, total, 4, elapsed)


async def test_no_progress_without_a_token(tmp_path: Path, big_log: Path) -> None:
    policy = write_policy(tmp_path, [big_log], toml=GREP_ONLY, timeout_s=60)
    arguments = {"log_path": str(big_log), "pattern": SLOW_PATTERN}
    result, seen, elapsed = await search(policy, arguments, "auto", with_token=False)
    assert not result.is_error and elapsed > 0.6  # long enough that a token would have had reports
    assert "notifications/progress" not in seen.notifications and seen.reports == []


# --- the broker, with stand-in workers ---------------------------------------------------


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth.log"
    path.write_text("first matching line\nsecond line\n")
    return path


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[float, float, str | None]] = []

    async def __call__(self, progress: float, total: float, message: str | None) -> None:
        self.calls.append((progress, total, message))


async def test_a_worker_flooding_progress_frames_is_stopped(tmp_path: Path, log_file: Path) -> None:
    pool = FakePool(["progress_flood"])
    bastion = make_bastion(tmp_path, log_file, pool, timeout_s=5)
    sink = Sink()
    started = time.monotonic()
    result = await bastion.call_tool("query_logs", {"log_path": str(log_file), "pattern": "first"}, progress=sink)
    assert result.is_error and time.monotonic() - started < 4  # refused on the budget, not at the deadline
    (end,) = [record for record in read_audit(tmp_path / "audit.jsonl") if record["event"] == "end"]
    assert end["outcome"] == "worker_crashed" and "progress frames" in end["detail"]
    assert len(sink.calls) <= PROGRESS_FRAMES_SLACK + PROGRESS_FRAMES_PER_S * 5
    assert all(progress <= total == log_file.stat().st_size for progress, total, _ in sink.calls)
    assert alive(pool) == []


async def test_a_worker_s_numbers_are_clamped_and_never_go_back(tmp_path: Path, log_file: Path) -> None:
    pool = FakePool(["progress_lies"])
    bastion = make_bastion(tmp_path, log_file, pool)
    sink = Sink()
    result = await bastion.call_tool("query_logs", {"log_path": str(log_file), "pattern": "first"}, progress=sink)
    assert not result.is_error
    size = log_file.stat().st_size
    assert sink.calls, "a report within the budget reaches the client"
    values = [progress for progress, _, _ in sink.calls]
    assert all(0 < value <= size for value in values) and values == sorted(set(values))
    assert all(
        total == size and message in ("0 of 1 files searched", "1 of 1 files searched")
        for _, total, message in sink.calls
    )


async def test_no_sink_no_progress_work(tmp_path: Path, log_file: Path) -> None:
    """Without a client that asked, frames are counted against the budget but relayed nowhere."""
    pool = FakePool(["progress_lies"])
    bastion = make_bastion(tmp_path, log_file, pool)
    result = await bastion.call_tool("query_logs", {"log_path": str(log_file), "pattern": "first"})
    assert not result.is_error


# --- rates: the worker's frames and the client's notifications ----------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_worker_reports_at_most_once_an_interval_and_only_changes(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 100_000)
    fd = os.open(path, os.O_RDONLY)
    clock, sent, flushed = Clock(), [], []
    meter = worker_progress.ProgressMeter([fd], sent.append, lambda: flushed.append(len(sent)), clock)
    try:
        for step in range(400):  # 4 s of 10 ms steps, reading 100 bytes each for the first 2 s
            if step < 200:
                os.read(fd, 100)
            clock.now += 0.01
            meter.tick(files_done=0 if step < 200 else 1)
    finally:
        os.close(fd)
    assert all(isinstance(frame, Progress) for frame in sent)
    # 2 s of change at one report per 0.25 s, then one for the file finished; none after.
    assert 7 <= len(sent) <= 9, sent
    scanned = [frame.scanned for frame in sent]
    assert scanned == sorted(scanned) and scanned[-1] == 20_000 and sent[-1].files_done == 1
    assert len(set((frame.scanned, frame.files_done) for frame in sent)) == len(sent)  # only changes
    assert flushed == list(range(len(sent)))  # pending lines leave before each report


def test_the_worker_sends_nothing_in_the_first_interval(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    clock, sent = Clock(), []
    meter = worker_progress.ProgressMeter([fd], sent.append, lambda: None, clock)
    os.read(fd, 10)
    clock.now += worker_progress.INTERVAL_S * 0.9
    meter.tick(files_done=1)
    os.close(fd)
    assert sent == [] and 1 <= meter.wait_ms() <= 30


def test_a_real_search_sends_frames_at_the_worker_s_rate(big_log: Path) -> None:
    """The search code itself (unconfined, on real grep): bounded frames, lines before each."""
    import shutil

    from bastion_wire.protocol import SearchFile, SearchRequest
    from workers import search as worker_search

    request = SearchRequest(pattern=SLOW_PATTERN, max_lines=10, max_line_bytes=4096, files=[SearchFile()])
    sent: list[Any] = []
    fd = os.open(big_log, os.O_RDONLY)
    started = time.monotonic()
    worker_search.search(request, [fd], [shutil.which("grep") or "/usr/bin/grep"], sent.append)
    elapsed = time.monotonic() - started
    frames = [frame for frame in sent if isinstance(frame, Progress)]
    assert frames and len(frames) <= elapsed / worker_progress.INTERVAL_S + 1
    assert all(frame.scanned <= big_log.stat().st_size for frame in frames)
    assert not [frame for frame in sent if isinstance(frame, Lines)]
    assert type(sent[-1]).__name__ == "Done"


async def test_the_client_is_told_at_most_four_times_a_second_and_finally_all() -> None:
    clock, sent = Clock(), []

    async def send(progress: float, total: float | None, message: str | None) -> None:
        sent.append((clock.now, progress, total, message))

    reporter = ClientProgress(send, clock)
    for step in range(1, 201):  # 2 s of reports every 10 ms
        clock.now += 0.01
        await reporter(step * 10, 5000, "x")
    await reporter(1, 5000, "back")  # never goes back
    await reporter(9999, 5000, "past")  # never past the total
    clock.now += 1
    await reporter(9999, 5000, "past")
    await reporter.finish()
    times = [when for when, _, _, _ in sent[:-1]]
    assert all(later - earlier >= 0.25 - 1e-9 for earlier, later in zip(times, times[1:], strict=False))
    assert all(progress <= 5000 for _, progress, _, _ in sent)
    assert [progress for _, progress, _, _ in sent] == sorted({progress for _, progress, _, _ in sent})
    assert sent[-1][1:] == (5000, 5000, FINISHED) or sent[-1][1] == 5000


async def test_no_final_report_when_none_was_sent() -> None:
    sent: list[Any] = []

    async def send(progress: float, total: float | None, message: str | None) -> None:
        sent.append(progress)

    reporter = ClientProgress(send)
    await reporter.finish()
    assert sent == []


async def test_a_failing_send_stops_progress_not_the_call() -> None:
    calls: list[float] = []

    async def send(progress: float, total: float | None, message: str | None) -> None:
        calls.append(progress)
        raise anyio.BrokenResourceError

    clock = Clock()
    reporter = ClientProgress(send, clock)
    await reporter(1, 10, None)
    clock.now += 1
    await reporter(2, 10, None)
    await reporter.finish()
    assert calls == [1]
