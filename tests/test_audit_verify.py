"""`bastion audit verify`: every kind of tampering is named at the right line;
rotation (by size, logrotate create, logrotate copytruncate) keeps one chain;
a failed write leaves no half record; one log, one writer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.audit.log import CONTINUED, AuditError, AuditLog, seal, unseal
from broker.audit.verify import verify
from tests.conftest import BASTION, ROOT

Lines = list[bytes]


def write_events(path: Path, count: int, **options: int) -> tuple[int, str]:
    log = AuditLog(str(path), **options)
    try:
        for index in range(count):
            log.write("begin", tool="query_logs", arguments={"n": index, "pad": "x" * 40})
        return log.head
    finally:
        log.close()


def lines_of(path: Path) -> Lines:
    return path.read_bytes().rstrip(b"\n").split(b"\n")


def store(path: Path, lines: Lines, final_newline: bool = True) -> None:
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline else b""))


def reseal(line: bytes, old: bytes, new: bytes) -> bytes:
    """Edit a record and recompute its own hash, as a careful forger would."""
    sealed = unseal(line)
    assert sealed is not None
    return seal(sealed[0].replace(old, new))


def forge_after(lines: Lines, index: int) -> bytes:
    """A record that chains perfectly onto lines[index] (seq+1, prev, own hash)."""
    record = json.loads(lines[index])
    body = {
        "seq": record["seq"] + 1,
        "ts": record["ts"],
        "event": "begin",
        "tool": "query_logs",
        "arguments": {"forged": True},
        "prev": hashlib.sha256(lines[index]).hexdigest(),
    }
    return seal(json.dumps(body, separators=(",", ":")).encode())


def _edit_naive(lines: Lines) -> Lines:
    lines[1] = lines[1].replace(b'"n":1', b'"n":7')
    return lines


def _edit_resealed(lines: Lines) -> Lines:
    lines[1] = reseal(lines[1], b'"n":1', b'"n":7')
    return lines


def _edit_last(lines: Lines) -> Lines:
    lines[-1] = lines[-1].replace(b'"n":5', b'"n":0')
    return lines


def _strip_hash(lines: Lines) -> Lines:
    sealed = unseal(lines[1])
    assert sealed is not None
    lines[1] = sealed[0]
    return lines


def _insert_garbage(lines: Lines) -> Lines:
    return [*lines[:2], b'{"seq":3,"event":"begin","prev":"00"}', *lines[2:]]


def _insert_copy(lines: Lines) -> Lines:
    return [*lines[:3], lines[1], *lines[3:]]


def _insert_forged(lines: Lines) -> Lines:
    return [*lines[:2], forge_after(lines, 1), *lines[2:]]


def _swap(lines: Lines) -> Lines:
    lines[1], lines[2] = lines[2], lines[1]
    return lines


def _replace_with_text(lines: Lines) -> Lines:
    lines[1] = b"hello"
    return lines


# (id, tamper, kind, line) on a 6-record log
TAMPERING: list[tuple[str, Callable[[Lines], Lines], str, int]] = [
    ("edit_naive", _edit_naive, "edited", 2),
    ("edit_with_recomputed_hash", _edit_resealed, "edited", 2),
    ("edit_last_line", _edit_last, "edited", 6),
    ("hash_field_removed", _strip_hash, "edited", 2),
    ("drop_middle", lambda lines: lines[:2] + lines[3:], "dropped", 3),
    ("drop_first", lambda lines: lines[1:], "dropped", 1),
    ("drop_two", lambda lines: lines[:1] + lines[3:], "dropped", 2),
    ("insert_garbage", _insert_garbage, "inserted", 3),
    ("insert_copy_of_earlier", _insert_copy, "inserted", 4),
    ("insert_forged_perfect_link", _insert_forged, "inserted", 4),
    ("reorder", _swap, "reordered", 2),
    ("replace_with_text", _replace_with_text, "malformed", 2),
]


@pytest.mark.parametrize(
    ("tamper", "kind", "line"), [case[1:] for case in TAMPERING], ids=[case[0] for case in TAMPERING]
)
def test_each_kind_of_tampering_is_named_at_its_line(
    tmp_path: Path, tamper: Callable[[Lines], Lines], kind: str, line: int
) -> None:
    path = tmp_path / "audit.jsonl"
    write_events(path, 6)
    assert verify([str(path)]).problem is None
    store(path, tamper(lines_of(path)))
    problem = verify([str(path)]).problem
    assert problem is not None
    assert (problem.kind, problem.line) == (kind, line), problem


def test_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_events(path, 3)
    path.write_bytes(path.read_bytes()[:-20])
    problem = verify([str(path)]).problem
    assert problem is not None and (problem.kind, problem.line) == ("torn", 3)


def test_intact_log_reports_its_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    seq, head = write_events(path, 5)
    report = verify([str(path)])
    assert report.problem is None and report.notes == []
    assert (report.records, report.first_seq, report.last_seq, report.head) == (5, 1, 5, head)
    assert seq == 5


def test_cli_exit_status_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_events(path, 4)
    ok = subprocess.run([str(BASTION), "audit", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 4 records in 1 file, seq 1..4; head "), ok
    store(path, _swap(lines_of(path)))
    bad = subprocess.run([str(BASTION), "audit", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "line 2: reordered" in bad.stdout, bad
    missing = subprocess.run(
        [str(BASTION), "audit", "verify", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr


# --- rotation -------------------------------------------------------------------


def test_rotation_by_size_keeps_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_events(path, 60, max_bytes=3000, keep=100)
    files = sorted(tmp_path.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:])) + [path]
    assert len(files) > 3
    assert all(file.stat().st_size <= 3000 for file in files)
    report = verify([str(file) for file in files])
    assert report.problem is None and report.notes == [] and report.last_seq == 60 + len(files) - 1
    for file in files[1:]:
        first = json.loads(lines_of(file)[0])
        assert first["event"] == CONTINUED and first["reason"] == "size_limit"
    # one file alone verifies as a continuation; the wrong order does not
    alone = verify([str(path)])
    assert alone.problem is None and "continues from seq" in alone.notes[0]
    wrong = verify([str(path), str(files[-2])])
    assert wrong.problem is not None


def test_rotation_keeps_only_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_events(path, 80, max_bytes=2000, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert verify([str(tmp_path / "audit.jsonl.2"), str(tmp_path / "audit.jsonl.1"), str(path)]).problem is None


@pytest.mark.parametrize("mode", ["create", "rename_only", "copytruncate"])
def test_external_logrotate_continues_the_chain(tmp_path: Path, mode: str) -> None:
    path, old = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    log = AuditLog(str(path))
    try:
        for index in range(3):
            log.write("begin", arguments={"n": index})
        if mode == "copytruncate":
            shutil.copyfile(path, old)
            os.truncate(path, 0)
        else:
            path.rename(old)
            if mode == "create":
                path.touch(mode=0o600)
        log.write("begin", arguments={"n": 3})
    finally:
        log.close()
    first = json.loads(lines_of(path)[0])
    assert first["event"] == CONTINUED and first["seq"] == 4
    assert first["reason"] == ("truncated_externally" if mode == "copytruncate" else "renamed_externally")
    if mode != "copytruncate":
        assert first["previous_file"] == "audit.jsonl.1"
    report = verify([str(old), str(path)])
    assert report.problem is None and report.last_seq == 5


# --- failures leave nothing half-written ----------------------------------------------

FSIZE_SCRIPT = """
import json, resource, sys
from broker.audit.log import AuditError, AuditLog
path = sys.argv[1]
log = AuditLog(path)
log.write("begin", arguments={"n": 0})
size = log._size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 600, resource.RLIM_INFINITY))
outcomes = []
for payload in ("y" * 5000, "z" * 10):
    try:
        log.write("begin", arguments={"big": payload})
        outcomes.append("ok")
    except AuditError as exc:
        outcomes.append("refused: " + str(exc))
print(json.dumps(outcomes))
"""


def test_file_size_limit_refuses_the_record_and_leaves_no_torn_line(tmp_path: Path) -> None:
    """RLIMIT_FSIZE lets the big record's write stop part-way: it must be cut back."""
    path = tmp_path / "audit.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", FSIZE_SCRIPT, str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    big, small = json.loads(proc.stdout)
    assert big.startswith("refused: cannot write audit log") and small == "ok"
    report = verify([str(path)])
    assert report.problem is None and report.records == 2


def test_failed_sync_cuts_the_record_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write("begin")
    before = path.read_bytes()

    def broken_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("broker.audit.log.os.fdatasync", broken_sync)
    with pytest.raises(AuditError, match="Input/output error"):
        log.write("begin", arguments={"lost": True})
    assert path.read_bytes() == before
    monkeypatch.undo()
    assert log.write("end") == 2
    log.close()
    assert verify([str(path)]).problem is None


def test_secrets_are_redacted_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write("begin", arguments={"Nested": [{"API_KEY": "k-123456"}], "q": "Authorization: Bearer abc.def.ghi"})
    log.write("end", result_preview="GET /login?user=bob&password=hunter2 HTTP/1.1", outcome="ok")
    log.close()
    text = path.read_text()
    assert "k-123456" not in text and "abc.def.ghi" not in text and "hunter2" not in text
    assert "user=bob" in text  # only the secret goes
    assert verify([str(path)]).problem is None
