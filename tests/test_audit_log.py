"""The hash-chained JSON Lines audit log: record format, chain, resume and fail-closed errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from broker.audit.log import GENESIS, MAX_STRING, AuditError, AuditLog, line_hash
from tests.conftest import run_bounded

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def raw_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def verify_chain(path: Path) -> list[dict[str, Any]]:
    """Independent check: seq counts from 1 and prev is sha256 of the previous line's bytes."""
    records = []
    prev = "0" * 64
    for number, line in enumerate(raw_lines(path), 1):
        record = json.loads(line)
        assert record["seq"] == number
        assert record["prev"] == prev
        prev = hashlib.sha256(line).hexdigest()
        records.append(record)
    return records


def chain_problems(path: Path) -> list[int]:
    """Line numbers whose seq or prev does not follow from the line before."""
    bad = []
    prev, seq = "0" * 64, 0
    for number, line in enumerate(raw_lines(path), 1):
        record = json.loads(line)
        if record["prev"] != prev or record["seq"] != seq + 1:
            bad.append(number)
        prev, seq = hashlib.sha256(line).hexdigest(), record["seq"]
    return bad


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    (tmp_path / "audit").mkdir()  # AuditLog creates no directory outside the state directory
    return tmp_path / "audit" / "audit.jsonl"


def write_events(path: Path, count: int, first_seq: int = 1) -> None:
    log = AuditLog(str(path))
    try:
        for index in range(count):
            assert log.write("begin", tool="query_logs", arguments={"n": index}) == first_seq + index
    finally:
        log.close()


@pytest.mark.parametrize("count", [1, 2, 5])
def test_records_and_chain(audit_path: Path, count: int) -> None:
    write_events(audit_path, count)
    records = verify_chain(audit_path)
    assert len(records) == count
    assert records[0]["prev"] == GENESIS
    for index, record in enumerate(records):
        assert list(record) == ["seq", "ts", "event", "server", "tool", "arguments", "prev", "hash"]
        assert re.fullmatch(r"\d+-[0-9a-f]{6}", record["server"])
        assert record["event"] == "begin" and record["arguments"] == {"n": index}
        assert TS.match(record["ts"])
    # compact, ASCII-only, one record per line
    for line in raw_lines(audit_path):
        assert b", " not in line and b": " not in line
        assert all(byte < 0x80 for byte in line)


@pytest.mark.parametrize("line", [b'{"seq":1}', b'{"seq":1}\n', b'{"seq":1}\n\n'])
def test_line_hash_ignores_trailing_newlines(line: bytes) -> None:
    assert line_hash(line) == hashlib.sha256(b'{"seq":1}').hexdigest()


@pytest.mark.parametrize(("first", "second"), [(1, 1), (3, 2), (1, 4)])
def test_reopen_continues_seq_and_chain(audit_path: Path, first: int, second: int) -> None:
    write_events(audit_path, first)
    write_events(audit_path, second, first_seq=first + 1)
    records = verify_chain(audit_path)
    assert [r["seq"] for r in records] == list(range(1, first + second + 1))


def test_reopen_after_foreign_chain_uses_last_line(audit_path: Path) -> None:
    """Resume trusts only the last line: seq continues from it and prev hashes it."""
    last = b'{"seq":41,"event":"x","prev":"' + b"1" * 64 + b'"}'
    audit_path.write_bytes(b'{"seq":40}\n' + last + b"\n")
    log = AuditLog(str(audit_path))
    assert log.write("end") == 42
    log.close()
    record = json.loads(raw_lines(audit_path)[-1])
    assert record["seq"] == 42 and record["prev"] == hashlib.sha256(last).hexdigest()


def test_empty_existing_file_starts_from_genesis(audit_path: Path) -> None:
    audit_path.touch()
    write_events(audit_path, 2)
    assert len(verify_chain(audit_path)) == 2


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"seq":1,"prev":"0"}\n{"seq":2,"ev', "incomplete record"),
        (b'{"seq":1}', "incomplete record"),
        (b'{"seq":1}\nnot json\n', "does not end with a Bastion record"),
        (b'{"seq":1}\n{"event":"x"}\n', "does not end with a Bastion record"),
        (b"[1,2]\n", "does not end with a Bastion record"),
        (b'"seq"\n', "does not end with a Bastion record"),
        (b'{"seq":"one"}\n', "does not end with a Bastion record"),
        (b'{"seq":null}\n', "does not end with a Bastion record"),
        (b'{"seq":\xff}\n', "does not end with a Bastion record"),
        (b"\n", "does not end with a Bastion record"),
    ],
)
def test_damaged_tail_refuses_to_open(audit_path: Path, content: bytes, needle: str) -> None:
    audit_path.write_bytes(content)
    with pytest.raises(AuditError, match=needle):
        AuditLog(str(audit_path))
    assert audit_path.read_bytes() == content  # nothing appended


def test_parent_is_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AuditError, match="cannot open audit log"):
        AuditLog(str(blocker / "audit.jsonl"))


@pytest.mark.parametrize("kind", ["directory", "symlink", "dangling_symlink", "proc"])
def test_unopenable_paths(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        target = tmp_path / "dir.jsonl"
        target.mkdir()
    elif kind == "symlink":
        real = tmp_path / "real.jsonl"
        real.write_bytes(b"")
        target = tmp_path / "link.jsonl"
        target.symlink_to(real)
    elif kind == "dangling_symlink":
        target = tmp_path / "dangling.jsonl"
        target.symlink_to(tmp_path / "nowhere.jsonl")
    else:
        target = Path("/proc/self/bastion-audit.jsonl")
    with pytest.raises(AuditError, match="cannot open audit log"):
        AuditLog(str(target))
    if kind == "dangling_symlink":
        assert not (tmp_path / "nowhere.jsonl").exists()


def test_write_failure_raises_and_does_not_advance(audit_path: Path) -> None:
    log = AuditLog(str(audit_path))
    assert log.write("begin") == 1
    fd = log._fd
    os.close(fd)
    with pytest.raises(AuditError, match="cannot write audit log"):
        log.write("begin")
    # A fresh descriptor (same path) resumes where the file really ends.
    log._fd = os.open(audit_path, os.O_WRONLY | os.O_APPEND)
    assert log.write("end") == 2
    log.close()
    assert len(verify_chain(audit_path)) == 2


# Disk full / file size limit / failed sync: tests/test_audit_verify.py (the record is cut back).


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"arguments": {"pattern": "x" * (MAX_STRING + 10)}},
            {"arguments": {"pattern": "x" * MAX_STRING + "…[10 more chars]"}},
        ),
        ({"arguments": {"pattern": "y" * MAX_STRING}}, {"arguments": {"pattern": "y" * MAX_STRING}}),
        ({"detail": "z" * (MAX_STRING + 1)}, {"detail": "z" * MAX_STRING + "…[1 more chars]"}),
        ({"arguments": {"k" * 2000: 1}}, {"arguments": {"k" * MAX_STRING: 1}}),
        ({"arguments": {"list": list(range(100))}}, {"arguments": {"list": list(range(64))}}),
        ({"arguments": {str(i): i for i in range(100)}}, {"arguments": {str(i): i for i in range(64)}}),
        (
            {"arguments": {"deep": [[["w" * 2000]]]}},
            {"arguments": {"deep": [[["w" * MAX_STRING + "…[976 more chars]"]]]}},
        ),
        ({"arguments": {"raw": b"\x00\xff"}}, {"arguments": {"raw": "b'\\x00\\xff'"}}),
        ({"arguments": {"path": Path("/var/log/x")}}, {"arguments": {"path": "/var/log/x"}}),
        ({"arguments": {1: "int key", None: "none key"}}, {"arguments": {"1": "int key", "None": "none key"}}),
        ({"arguments": {"esc": "\x1b[31m\u202e\n"}}, {"arguments": {"esc": "\x1b[31m\u202e\n"}}),
        ({"arguments": {"n": None, "b": True, "f": 1.5}}, {"arguments": {"n": None, "b": True, "f": 1.5}}),
    ],
    ids=[
        "long_str",
        "exact_str",
        "top_level_str",
        "long_key",
        "long_list",
        "many_keys",
        "nested",
        "bytes",
        "path",
        "non_str_keys",
        "escapes",
        "scalars",
    ],
)
def test_field_values_are_bounded_and_serializable(
    audit_path: Path, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    log = AuditLog(str(audit_path))
    log.write("begin", **fields)
    log.close()
    (line,) = raw_lines(audit_path)
    assert b"\n" not in line and all(byte < 0x80 for byte in line)
    record = json.loads(line)
    for key, value in expected.items():
        assert record[key] == value
    verify_chain(audit_path)


def test_huge_argument_record_stays_small(audit_path: Path) -> None:
    log = AuditLog(str(audit_path))
    hostile = {f"k{i}": ["v" * 100_000] * 100 for i in range(100)}
    log.write("begin", arguments=hostile)
    log.close()
    assert audit_path.stat().st_size < 64 * 64 * (MAX_STRING + 40) + 64 * 40 + 1024


def test_new_file_and_directory_modes(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "a" / "b" / "audit.jsonl"
        AuditLog(str(path), state_root=str(tmp_path / "a")).close()  # only the state directory is created
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # os.makedirs applies `mode` to the leaf only; intermediate directories follow the umask.
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
    assert path.read_bytes() == b""


def test_existing_file_mode_is_not_changed(audit_path: Path) -> None:
    audit_path.write_bytes(b"")
    audit_path.chmod(0o640)
    AuditLog(str(audit_path)).close()
    assert stat.S_IMODE(audit_path.stat().st_mode) == 0o640


def test_relative_path_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    log = AuditLog("audit.jsonl")
    log.write("server_start")
    log.close()
    assert len(verify_chain(tmp_path / "audit.jsonl")) == 1


# --- tamper detection with the chain definition ---------------------------------


def test_edited_record_breaks_chain(audit_path: Path) -> None:
    write_events(audit_path, 4)
    lines = raw_lines(audit_path)
    lines[1] = lines[1].replace(b'"n":1', b'"n":9')
    audit_path.write_bytes(b"\n".join(lines) + b"\n")
    assert chain_problems(audit_path) == [3]


def test_deleted_record_breaks_chain(audit_path: Path) -> None:
    write_events(audit_path, 4)
    lines = raw_lines(audit_path)
    del lines[1]
    audit_path.write_bytes(b"\n".join(lines) + b"\n")
    assert chain_problems(audit_path) == [2]


def test_reordered_records_break_chain(audit_path: Path) -> None:
    write_events(audit_path, 4)
    lines = raw_lines(audit_path)
    lines[1], lines[2] = lines[2], lines[1]
    audit_path.write_bytes(b"\n".join(lines) + b"\n")
    assert chain_problems(audit_path) == [2, 3, 4]


def test_intact_log_has_no_problems(audit_path: Path) -> None:
    write_events(audit_path, 6)
    assert chain_problems(audit_path) == []


def test_deeply_nested_arguments_are_written(audit_path: Path) -> None:
    """The stdio transport's JSON parser allows nesting up to ~200 levels; such a call must still be
    audited, with the nesting cut at the redactor's depth bound (64 containers)."""
    nested: Any = "leaf"
    for _ in range(200):
        nested = {"k": [nested]}
    log = AuditLog(str(audit_path))
    log.write("begin", arguments=nested)
    log.close()
    (record,) = verify_chain(audit_path)
    depth, value = 0, record["arguments"]
    while isinstance(value, dict):
        value, depth = value["k"][0], depth + 1
    assert (depth, value) == (32, "[TOO DEEP]")


# --- something planted at the audit path (issue 21.1) --------------------------------

PLANT_TIMEOUT_S = 5.0
UNPRIVILEGED = 65534


def _bounded(action: Any, fifo: Path | None = None) -> Any:
    """The broker would be stuck writing: a reader releases it."""
    return run_bounded(action, fifo, PLANT_TIMEOUT_S, os.O_RDONLY)


def _plant(path: Path, kind: str, target: Path) -> int | None:
    """Put `kind` where the audit file was; return a descriptor to close afterwards, if any."""
    if kind in ("fifo", "fifo_with_reader"):
        os.mkfifo(path)
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK) if kind == "fifo_with_reader" else None
    if kind == "symlink":
        target.write_bytes(b"precious\n")
        path.symlink_to(target)
    elif kind == "directory":
        path.mkdir()
    elif kind == "foreign_owner":
        path.write_bytes(b"")
        os.chown(path, UNPRIVILEGED, UNPRIVILEGED)
    return None


def _nothing_in(fifo: int) -> bool:
    try:
        return os.read(fifo, 100) == b""
    except BlockingIOError:  # a writer still has it open, but wrote nothing
        return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()


PLANTED = ["fifo", "fifo_with_reader", "symlink", "directory", "foreign_owner"]


def _needs_root(kind: str) -> None:
    if kind == "foreign_owner" and os.geteuid() != 0:
        pytest.skip("only root can give a file to another uid")


@pytest.mark.parametrize("kind", PLANTED)
def test_planted_at_start_refuses_at_once(audit_path: Path, kind: str) -> None:
    _needs_root(kind)
    reader = _plant(audit_path, kind, audit_path.parent / "target")
    try:
        with pytest.raises(AuditError, match="cannot open audit log"):
            _bounded(lambda: AuditLog(str(audit_path)), audit_path if "fifo" in kind else None)
        if reader is not None:
            assert _nothing_in(reader)
    finally:
        if reader is not None:
            os.close(reader)
    if kind == "symlink":
        assert (audit_path.parent / "target").read_bytes() == b"precious\n"


@pytest.mark.parametrize("kind", PLANTED)
def test_planted_while_serving_is_refused_then_the_log_recovers(audit_path: Path, kind: str) -> None:
    """mv audit.jsonl audit.jsonl.1 && plant something: each record is refused at once and
    nothing reaches the planted object; once it is gone the next record creates a new file,
    chained to the last record written."""
    from broker.audit.verify import verify

    _needs_root(kind)
    log = AuditLog(str(audit_path))
    log.write("begin", tool="query_logs")
    rotated = audit_path.with_name("audit.jsonl.1")
    audit_path.rename(rotated)
    target = audit_path.parent / "target"
    reader = _plant(audit_path, kind, target)
    try:
        for _ in range(2):  # it stays refused while the path is planted
            with pytest.raises(AuditError, match="cannot write audit log"):
                _bounded(lambda: log.write("end", tool="query_logs"), audit_path if "fifo" in kind else None)
        if reader is not None:
            assert _nothing_in(reader)
    finally:
        if reader is not None:
            os.close(reader)
    if kind == "symlink":
        assert target.read_bytes() == b"precious\n"
    _remove(audit_path)
    assert log.write("end", tool="query_logs") == 3  # seq 2: the audit_continued record
    log.close()
    first = json.loads(raw_lines(audit_path)[0])
    assert (
        first["event"] == "audit_continued"
        and first["reason"] == "renamed_externally"
        and first["previous_file"] == rotated.name
    )
    assert os.stat(audit_path).st_uid == os.geteuid() and stat.S_IMODE(os.stat(audit_path).st_mode) == 0o600
    report = verify([str(rotated), str(audit_path)])
    assert report.problem is None and report.records == 3
