"""Joined engine runs (workers/search.py): several files fed one after the other into one
engine must answer exactly as one engine per file does, frame for frame: line numbers,
file attribution, context flags, counts, notes, skipped files and `more`.

The worker's search code runs here unconfined, on real grep and ripgrep, over seeded random
sets of files (empty files, files without a trailing newline, .gz rotations, matches on the
first and last lines, stamps for time windows) and random requests (order, max_lines,
windows, windowed counts). Each answer with every possible join is compared with the answer
with none.
"""

from __future__ import annotations

import errno
import gzip
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from bastion_wire.protocol import Done, Failed, FileSkipped, Line, Lines, Progress, SearchFile, SearchRequest
from broker.tools.query_logs import engine as search_engine
from broker.tools.query_logs.ere import parse_ere
from workers import search as worker_search
from workers import search_input, search_state

GREP = shutil.which("grep") or "/usr/bin/grep"
RG = shutil.which("rg")
ENGINES = ["grep"] + (["rg"] if RG else [])
EXECUTABLES = [GREP] + ([RG] if RG else [])
MTIME = 1_795_000_000.0  # 2026-11-18
STAMPS = [b"Nov 17 %02d:00:00 host sshd[1]: " % hour for hour in range(24)]
WORDS = [b"Failed password", b"Accepted", b"session opened", b"  at frame", b"", b"Failed"]


def _random_file(rng: random.Random) -> bytes:
    lines = [rng.choice(STAMPS) + rng.choice(WORDS) if rng.random() < 0.7 else rng.choice(WORDS) for _ in range(40)]
    data = b"\n".join(lines[: rng.randrange(0, 40)])
    return data + (b"\n" if data and rng.random() < 0.6 else b"")


def _write(directory: Path, contents: list[bytes], compressed: list[bool]) -> list[Path]:
    paths = []
    for number, (data, gz) in enumerate(zip(contents, compressed, strict=True)):
        path = directory / (f"f{number}.log.gz" if gz else f"f{number}.log")
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    return paths


def answer(request: SearchRequest, paths: list[Path]) -> list[Any]:
    """Everything the worker sends for `request` over `paths`, lines flattened. Done's
    `decompressed` is left out: it counts the bytes inflated, for the call's cap, and a joined
    run's feeder may have inflated the next .gz ahead of an engine that stopped at max_lines
    (tested apart, below)."""
    sent: list[Any] = []
    fds = [os.open(path, os.O_RDONLY) for path in paths]
    worker_search.search(request, fds, EXECUTABLES, sent.append)
    out: list[Any] = []
    for message in sent:
        if isinstance(message, Progress):
            continue  # how fast the search went, not what it found (a loaded host may send one)
        out += (
            [(line.file, line.line_no, line.text, line.context) for line in message.lines]
            if isinstance(message, Lines)
            else [msgspec.to_builtins(message)]
        )
    if isinstance(out[-1], dict):
        out[-1].pop("decompressed", None)
    return out


def _request(rng: random.Random, engine: str, compressed: list[bool]) -> SearchRequest:
    window = rng.random() < 0.4
    count = rng.random() < 0.25 and window  # a plain count never joins (grep -c)
    hours = sorted(rng.sample(range(24), 2))
    pattern = rng.choice(["Failed", "^Nov 17 0[0-9]", "^$", "frame|Accepted", "password$", "."])
    return SearchRequest(
        pattern=pattern,
        max_lines=rng.choice([1, 2, 5, 1000]),
        max_line_bytes=4096,
        files=[SearchFile(gzip=gz, mtime=MTIME, engine=engine) for gz in compressed],  # type: ignore[arg-type]
        count_only=count,
        newest_first=rng.random() < 0.5,
        since=MTIME - 86400 * 1.5 + hours[0] * 3600 if window else None,
        until=MTIME - 86400 * 1.5 + hours[1] * 3600 if window and rng.random() < 0.5 else None,
        ignore_case=rng.random() < 0.2,
        engine=engine,  # type: ignore[arg-type]
        rg_pattern=search_engine.to_rust_regex(parse_ere(pattern)) if engine == "rg" else "",
    )


def _joined(request: SearchRequest, joins: list[bool]) -> SearchRequest:
    files = [msgspec.structs.replace(spec, join=join) for spec, join in zip(request.files, joins, strict=True)]
    return msgspec.structs.replace(request, files=files)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", range(12))
def test_joined_runs_answer_as_one_engine_per_file(tmp_path: Path, engine: str, seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randrange(2, 6)
    compressed = [rng.random() < 0.3 for _ in range(count)]
    paths = _write(tmp_path, [_random_file(rng) for _ in range(count)], compressed)
    for _ in range(6):
        request = _request(rng, engine, compressed)
        alone = answer(request, paths)
        assert isinstance(alone[-1], dict) and "more" in alone[-1], alone[-1]
        for joins in ([False] + [True] * (count - 1), [False] + [rng.random() < 0.5 for _ in range(count - 1)]):
            assert answer(_joined(request, joins), paths) == alone, (request, joins)


def test_a_match_on_the_first_line_of_the_second_file(tmp_path: Path) -> None:
    paths = _write(tmp_path, [b"one\ntwo\n", b"Failed first\nthree\n"], [False, False])
    for engine in ENGINES:
        request = _request(random.Random(0), engine, [False, False])
        request = msgspec.structs.replace(
            request, pattern="Failed", rg_pattern="(?-u)Failed", since=None, until=None, count_only=False
        )
        lines = [item for item in answer(_joined(request, [False, True]), paths) if isinstance(item, tuple)]
        assert lines == [(1, 1, "Failed first", False)]


def test_a_file_without_a_trailing_newline_keeps_its_last_line(tmp_path: Path) -> None:
    """Its last line is not glued to the next file's first: `x$` and `^y` match as with one engine each."""
    paths = _write(tmp_path, [b"a\nx", b"y\nb\n", b"", b"x"], [False, True, False, False])
    for engine in ENGINES:
        for pattern, expected in (("x$", [(0, 2), (3, 1)]), ("^y", [(1, 1)]), ("xy", [])):
            request = SearchRequest(
                pattern=pattern,
                max_lines=100,
                max_line_bytes=100,
                files=[SearchFile(gzip=gz, engine=engine) for gz in (False, True, False, False)],  # type: ignore[arg-type]
                engine=engine,  # type: ignore[arg-type]
                rg_pattern=search_engine.to_rust_regex(parse_ere(pattern)),
            )
            got = answer(_joined(request, [False, True, True, True]), paths)
            assert [(item[0], item[1]) for item in got if isinstance(item, tuple)] == expected, (engine, pattern)
            assert got == answer(request, paths)


def test_max_lines_stops_a_joined_run_where_one_engine_per_file_stops(tmp_path: Path) -> None:
    paths = _write(tmp_path, [b"Failed\n" * 3, b"Failed\n" * 3, b"Failed\n"], [False, True, False])
    files = [SearchFile(), SearchFile(gzip=True), SearchFile()]
    request = SearchRequest(pattern="Failed", max_lines=4, max_line_bytes=100, files=files)
    got = answer(_joined(request, [False, True, True]), paths)
    assert [item[:2] for item in got if isinstance(item, tuple)] == [(0, 1), (0, 2), (0, 3), (1, 1)]
    assert got[-1]["more"] is True and got == answer(request, paths)


def test_an_engine_killed_in_a_joined_run_costs_the_file_it_was_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run dies part-way through file 1 (after its first match was sent): files 1 and 2
    are searched again, one engine each; file 1's engine dies again and only file 1 is skipped,
    with its first match sent once."""
    paths = _write(tmp_path, [b"Failed a\n", b"Failed b\nok\nFailed c\n", b"Failed d\n"], [False, False, True])
    files = [SearchFile(), SearchFile(), SearchFile(gzip=True)]
    request = SearchRequest(pattern="Failed", max_lines=100, max_line_bytes=100, files=files)
    real_take = worker_search.FileState.take

    def take(self: worker_search.FileState, hit: Any) -> bool:
        if self.index == 1 and hit is not None and hit.line_no == 3:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return real_take(self, hit)

    monkeypatch.setattr(search_state.FileState, "take", take)
    got = answer(_joined(request, [False, True, True]), paths)
    assert [item[:3] for item in got if isinstance(item, tuple)] == [
        (0, 1, "Failed a"),
        (1, 1, "Failed b"),
        (2, 1, "Failed d"),
    ]
    assert got[-1]["skipped"] == [msgspec.to_builtins(FileSkipped(1, "ENOMEM"))]
    assert not [child for child in psutil.Process().children() if child.name() in ("grep", "rg")]


def test_a_dead_engine_among_several_files_is_retried_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The joined run's engine is killed (SIGKILL, as the memory limit would) before any output:
    each file is searched again alone, and the answer is whole."""
    paths = _write(tmp_path, [b"Failed a\n", b"Failed b\n", b"Failed c\n"], [False, False, False])
    request = SearchRequest(pattern="Failed", max_lines=100, max_line_bytes=100, files=[SearchFile()] * 3)
    real_spawn = worker_search.EngineRun._spawn
    killed: list[int] = []

    def spawn(self: worker_search.EngineRun) -> Any:
        spawned = real_spawn(self)
        if len(self.files) > 1:
            os.kill(spawned[0], signal.SIGKILL)
            killed.append(spawned[0])
        return spawned

    monkeypatch.setattr(worker_search.EngineRun, "_spawn", spawn)
    got = answer(_joined(request, [False, True, True]), paths)
    assert killed and [item[:2] for item in got if isinstance(item, tuple)] == [(0, 1), (1, 1), (2, 1)]
    assert got[-1]["skipped"] == []


def test_a_seccomp_kill_in_a_joined_run_still_ends_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _write(tmp_path, [b"Failed a\n", b"Failed b\n"], [False, False])
    request = SearchRequest(pattern="Failed", max_lines=100, max_line_bytes=100, files=[SearchFile()] * 2)

    def finish(self: worker_search.EngineRun, code: int, errors: bytes) -> None:
        raise worker_search.EngineFailure("engine_killed", "SIGSYS")

    monkeypatch.setattr(worker_search.EngineRun, "_finish", finish)
    got = answer(_joined(request, [False, True]), paths)
    assert got[-1] == msgspec.to_builtins(Failed("engine_killed", "SIGSYS"))


def test_joins_the_worker_cannot_keep_exact_are_refused(tmp_path: Path) -> None:
    paths = _write(tmp_path, [b"a\n", b"a\n"], [False, False])
    files = [SearchFile(), SearchFile(join=True)]
    for refused in (
        SearchRequest(pattern="a", max_lines=1, max_line_bytes=100, files=files, context=1),
        SearchRequest(pattern="a", max_lines=1, max_line_bytes=100, files=files, count_only=True),
        SearchRequest(pattern="a", max_lines=1, max_line_bytes=100, files=[SearchFile(join=True), SearchFile()]),
    ):
        assert answer(refused, paths)[-1]["type"] == "failed"
    if RG:
        mixed = [SearchFile(engine="grep"), SearchFile(engine="rg", join=True)]
        request = SearchRequest(pattern="a", max_lines=1, max_line_bytes=100, files=mixed, rg_pattern="(?-u)a")
        assert answer(request, paths)[-1]["type"] == "failed"


def test_done_and_lines_are_the_only_frames(tmp_path: Path) -> None:
    """The broker-side shape is unchanged: Lines frames, then one Done."""
    paths = _write(tmp_path, [b"Failed\n", b"Failed\n"], [False, True])
    sent: list[Any] = []
    request = SearchRequest(
        pattern="Failed", max_lines=10, max_line_bytes=100, files=[SearchFile(), SearchFile(gzip=True, join=True)]
    )
    worker_search.search(request, [os.open(path, os.O_RDONLY) for path in paths], EXECUTABLES, sent.append)
    assert [type(message) for message in sent] == [Lines, Done]
    assert sent[0].lines == [Line(1, "Failed", 0), Line(1, "Failed", 1)]


def test_decompressed_counts_what_was_inflated_even_ahead_of_the_engine(tmp_path: Path) -> None:
    """The call's decompression cap counts work done: a joined run may inflate a .gz that its
    engine, stopped at max_lines, never read; never more than the files hold."""
    data = b"Failed\n" * 100
    paths = _write(tmp_path, [data, data], [True, True])
    files = [SearchFile(gzip=True), SearchFile(gzip=True, join=True)]
    sent: list[Any] = []
    request = SearchRequest(pattern="Failed", max_lines=1, max_line_bytes=100, files=files)
    worker_search.search(request, [os.open(path, os.O_RDONLY) for path in paths], EXECUTABLES, sent.append)
    done = sent[-1]
    assert isinstance(done, Done) and done.more and len(data) <= done.decompressed <= 2 * len(data)


def test_a_joined_run_that_stops_early_reads_little_past_the_answer(tmp_path: Path) -> None:
    """max_lines met in the first file: the feeder was at most a pipe and a chunk ahead of the
    engine, so the 4 MiB file after the next is never read."""
    filler = b"nothing here\n" * ((4 << 20) // 13)
    paths = _write(tmp_path, [b"Failed\nFailed\n", filler, filler], [False, False, False])
    request = SearchRequest(pattern="Failed", max_lines=1, max_line_bytes=100, files=[SearchFile()] * 3)
    fds = [os.open(path, os.O_RDONLY) for path in paths]
    positions = [os.dup(fd) for fd in fds]  # the same open files: their offsets show what was read
    sent: list[Any] = []
    worker_search.search(_joined(request, [False, True, True]), fds, EXECUTABLES, sent.append)
    read = [os.lseek(fd, 0, os.SEEK_CUR) for fd in positions]
    assert sent[-1].more and read[2] == 0
    assert read[1] <= search_input.JOINED_PIPE_BYTES + search_input.READ_CHUNK
