"""`bastion audit verify FILE...`: check the hash chain of audit log files.

Files are given oldest first (e.g. audit.jsonl.2 audit.jsonl.1 audit.jsonl).
The first problem is reported with its file, line and kind:
  torn      the last line is incomplete (a write was cut off)
  malformed a line is not a Bastion record
  edited    a line's content no longer matches its own hash, or the next
            line's `prev` names a different (original) line
  dropped   sequence numbers are missing, or a file does not start at the
            beginning of the chain nor with an `audit_continued` record
  inserted  a line that does not belong to the chain sits between two that do
  reordered a record appears later than its sequence number says
  forged    (with --key) a checkpoint's signature does not verify, or it does
            not seal the record just before it
  cut       (with --checkpoint) a checkpoint kept elsewhere seals a record the
            files no longer hold: their tail was cut
A chain's end cannot prove itself: someone able to write the file can cut
or rewrite its tail. Compare the printed head hash with one kept elsewhere
(the broker logs it at stop), or use signed checkpoints
(broker/audit/checkpoint.py: --key, --checkpoint).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broker.audit import checkpoint
from broker.audit.log import CONTINUED, GENESIS, line_hash, unseal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.kind}: {self.message}"


@dataclass
class Report:
    records: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    head: str = GENESIS
    notes: list[str] = field(default_factory=list)
    problem: Problem | None = None
    servers: set[str] = field(default_factory=set)  # the server instances that wrote the records
    sealed_seq: int | None = None  # with a key: the last record a valid checkpoint seals
    checkpoints: int = 0


@dataclass(frozen=True)
class Entry:
    number: int  # 1-based line number in its file
    raw: bytes
    record: dict[str, Any] | None  # None: not a Bastion record

    @property
    def seq(self) -> int | None:
        return self.record["seq"] if self.record else None


def _parse(number: int, raw: bytes) -> Entry:
    try:
        record = json.loads(raw)
    except ValueError:
        return Entry(number, raw, None)
    ok = isinstance(record, dict) and type(record.get("seq")) is int and isinstance(record.get("prev"), str)
    return Entry(number, raw, record if ok else None)


def _read(path: str) -> tuple[list[Entry], bool]:
    """The file's lines as entries, and whether the last one is torn (no newline)."""
    with open(path, "rb") as file:
        data = file.read()
    torn = bool(data) and not data.endswith(b"\n")
    lines = data.split(b"\n")
    if not torn:
        lines.pop()  # the empty string after the final newline
    return [_parse(number, raw) for number, raw in enumerate(lines, 1)], torn


def _own_hash_ok(entry: Entry) -> bool:
    sealed = unseal(entry.raw)
    return sealed is not None and hashlib.sha256(sealed[0]).hexdigest() == sealed[1]


class _Chain:
    """Walks entries in order, remembering the last good record."""

    def __init__(self, report: Report, seals: Seals | None = None) -> None:
        self.report = report
        self.last: Entry | None = None
        self.seals = seals

    def sealed(self, entry: Entry, name: str) -> Problem | None:
        """With a key: a checkpoint record must verify and seal the record before it; a
        record a checkpoint from elsewhere seals must be the one it sealed."""
        if self.seals is None or entry.record is None:
            return None
        record, seq = entry.record, entry.seq or 0
        kept = self.seals.external.get(seq)
        if kept is not None and line_hash(entry.raw) != kept.head:
            return Problem(name, entry.number, "forged", f"record seq {seq} is not the one a kept checkpoint sealed")
        if record.get("event") != checkpoint.EVENT:
            return None
        found = checkpoint.from_record(record)
        if found is None or not found.valid(self.seals.key):
            return Problem(name, entry.number, "forged", "this checkpoint's signature does not verify with the key")
        if found.seq != seq - 1 or found.head != record["prev"]:
            return Problem(name, entry.number, "forged", "this checkpoint does not seal the record just before it")
        self.report.sealed_seq = found.seq
        self.report.checkpoints += 1
        return None

    def follows(self, entry: Entry) -> bool:
        expected_seq = self.report.last_seq + 1
        return entry.seq == expected_seq and entry.record is not None and entry.record["prev"] == self.report.head

    def accept(self, entry: Entry) -> None:
        report = self.report
        if report.first_seq is None:
            report.first_seq = entry.seq
        report.records += 1
        if entry.record is not None and isinstance(entry.record.get("server"), str):
            report.servers.add(entry.record["server"])
        report.last_seq = entry.seq or 0
        report.head = line_hash(entry.raw)
        self.last = entry


def _start(entry: Entry, chain: _Chain, first_file: bool, name: str) -> Problem | None:
    """A file's first record: the chain's genesis, or a continuation of the previous file."""
    record = entry.record or {}
    if first_file and entry.seq == 1 and record.get("prev") == GENESIS:
        return None
    if record.get("event") != CONTINUED:
        what = "the chain's first record" if first_file else f"an {CONTINUED} record"
        return Problem(
            name,
            entry.number,
            "dropped",
            f"the file starts at seq {entry.seq}, not with {what}: earlier records were dropped",
        )
    if first_file:
        chain.report.last_seq, chain.report.head = (entry.seq or 1) - 1, record["prev"]
        chain.report.notes.append(
            f"{name} continues from seq {chain.report.last_seq} of an earlier file"
            "; give that file first to check the link"
        )
    return None


def _diagnose(entries: list[Entry], index: int, chain: _Chain, name: str) -> Problem:
    """Name what went wrong at entries[index], which does not follow the last good record."""
    entry, expected = entries[index], chain.report.last_seq + 1
    following = entries[index + 1] if index + 1 < len(entries) else None
    skipped = following is not None and _own_hash_ok(following) and chain.follows(following)
    if entry.record is None:
        if skipped:
            return Problem(
                name,
                entry.number,
                "inserted",
                "this line is not part of the chain (the next line continues from the line before it)",
            )
        return Problem(name, entry.number, "malformed", "not a Bastion audit record")
    assert entry.seq is not None
    later = (
        next((other for other in entries[index + 1 :] if other.seq == expected), None) if entry.seq > expected else None
    )
    if later is not None:
        return Problem(
            name,
            entry.number,
            "reordered",
            f"seq {entry.seq} where seq {expected} was due; seq {expected} is at line {later.number}",
        )
    if skipped:
        return Problem(
            name,
            entry.number,
            "inserted",
            "this line is not part of the chain (the next line continues from the line before it)",
        )
    if not _own_hash_ok(entry):
        return Problem(name, entry.number, "edited", "the line's content does not match its own hash")
    if entry.seq == expected:
        previous = chain.last.number if chain.last else entry.number - 1
        return Problem(
            name,
            previous,
            "edited",
            f"line {entry.number} names a different previous record: this line was changed (and its hash recomputed)"
            " or replaced",
        )
    if entry.seq > expected:
        return Problem(
            name, entry.number, "dropped", f"records seq {expected}..{entry.seq - 1} are missing before this line"
        )
    return Problem(
        name,
        entry.number,
        "inserted",
        f"seq {entry.seq} repeats or goes back (seq {expected} was due): this line or the one before it was inserted",
    )


def _verify_file(path: str, name: str, chain: _Chain, first_file: bool) -> Problem | None:
    entries, torn = _read(path)
    if not entries:
        chain.report.notes.append(f"{name} is empty")
        return None
    for index, entry in enumerate(entries):
        if torn and index == len(entries) - 1:
            return Problem(name, entry.number, "torn", "the last line is incomplete (a write was cut off)")
        if index == 0 and entry.record is not None:
            problem = _start(entry, chain, first_file, name)
            if problem is not None:
                return problem
        if not (_own_hash_ok(entry) and chain.follows(entry)):
            return _diagnose(entries, index, chain, name)
        problem = chain.sealed(entry, name)
        if problem is not None:
            return problem
        chain.accept(entry)
    return None


@dataclass
class Seals:
    """What checks the checkpoints: the public key, and checkpoints kept elsewhere by seq."""

    key: Ed25519PublicKey
    external: dict[int, checkpoint.Checkpoint] = field(default_factory=dict)


def verify(paths: list[str], seals: Seals | None = None) -> Report:
    """Check the files as one chain, oldest first. Raises OSError if one cannot be read."""
    report = Report()
    chain = _Chain(report, seals)
    for position, path in enumerate(paths):
        report.problem = _verify_file(path, path, chain, first_file=position == 0 or report.records == 0)
        if report.problem is not None:
            return report
    if seals is not None:
        _check_tail(report, seals, paths[-1] if paths else "")
    return report


def _check_tail(report: Report, seals: Seals, name: str) -> None:
    """A checkpoint kept elsewhere that seals a later record than the files hold: cut."""
    beyond = [seq for seq in seals.external if seq > report.last_seq]
    if beyond:
        report.problem = Problem(
            name,
            0,
            "cut",
            f"the files end at seq {report.last_seq}, but a kept checkpoint seals seq {max(beyond)}:"
            " records were cut from the end",
        )
    elif not report.checkpoints:
        report.notes.append("no checkpoint in these files: nothing is sealed")


def summary(report: Report, files: int) -> str:
    if report.problem is not None:
        return f"FAILED: {report.problem}"
    if not report.records:
        return "OK: no records"
    servers = len(report.servers)
    by = f"; written by {servers} server instance{'s' if servers != 1 else ''}" if servers else ""
    sealed = ""
    if report.sealed_seq is not None:
        unsealed = report.last_seq - report.sealed_seq - 1  # the checkpoint record itself is not "after"
        sealed = f"; sealed up to seq {report.sealed_seq}, {max(unsealed, 0)} later records unsealed"
    return (
        f"OK: {report.records} records in {files} file{'s' if files != 1 else ''}, "
        f"seq {report.first_seq}..{report.last_seq}; head {report.head}{by}{sealed}"
    )
