"""Signed audit checkpoints: what they prove (a rewritten or cut tail shows) and what they do not."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from broker.audit import checkpoint
from broker.audit.checkpoint import CheckpointKeyError, load_public_key, load_signer, parse_token
from broker.audit.log import AuditLog, Sealing, seal
from broker.audit.verify import Seals, summary, verify
from broker.cli import preflight
from tests.conftest import BASTION, bastion_client, read_audit, write_policy


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "audit-key.pem"
    checkpoint.generate(str(path))
    return path


def sealed_log(path: Path, key: Path, records: int, every: int = 3) -> list[str]:
    """Write `records` records with a checkpoint every `every`; return the logged tokens."""
    tokens: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: tokens.append(record.getMessage().split()[-1])  # type: ignore[method-assign]
    logger = logging.getLogger("bastion.audit")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log = AuditLog(str(path), sealing=Sealing(load_signer(str(key)), every=every, interval_s=3600))
        for index in range(records):
            log.write("end", n=index)
        log.close()
    finally:
        logger.removeHandler(handler)
    return [token for token in tokens if token.startswith("bastion-checkpoint:")]


def rewrite(path: Path, change: dict[int, dict[str, object]]) -> None:
    """What an attacker with write access but no key can do: edit records and recompute the chain."""
    prev = "0" * 64
    out = []
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        record.pop("hash")
        record.update(change.get(record["seq"], {}))
        record["prev"] = prev
        body = json.dumps(record, separators=(",", ":")).encode()
        sealed = seal(body)
        out.append(sealed)
        prev = hashlib.sha256(sealed).hexdigest()
    path.write_bytes(b"\n".join(out) + b"\n")


def seals(key: Path, *tokens: str) -> Seals:
    return Seals(load_public_key(str(key) + ".pub"), {parse_token(t).seq: parse_token(t) for t in tokens})


def test_keygen_writes_a_private_key_only_the_server_reads(tmp_path: Path, key: Path) -> None:
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert os.stat(str(key) + ".pub").st_mode & 0o777 == 0o644
    with pytest.raises(FileExistsError):
        checkpoint.generate(str(key))  # never overwritten
    cli = subprocess.run([BASTION, "audit", "keygen", str(key)], capture_output=True, text=True, timeout=30)
    assert cli.returncode != 0 and "cannot write" in cli.stderr


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_private_key_others_can_read_is_refused(key: Path, mode: int) -> None:
    os.chmod(key, mode)
    with pytest.raises(CheckpointKeyError, match="readable by others"):
        load_signer(str(key))
    (finding,) = preflight._checkpoint_key(str(key))
    assert finding.refuses and finding.subject == "audit.checkpoint_key"


def test_a_symlinked_or_wrong_key_is_refused(tmp_path: Path, key: Path) -> None:
    (tmp_path / "link.pem").symlink_to(key)
    with pytest.raises(CheckpointKeyError, match="symbolic link"):
        load_signer(str(tmp_path / "link.pem"))
    (tmp_path / "junk.pem").write_text("not a key")
    os.chmod(tmp_path / "junk.pem", 0o600)
    with pytest.raises(CheckpointKeyError, match="not an unencrypted PEM private key"):
        load_signer(str(tmp_path / "junk.pem"))


def test_checkpoints_seal_the_record_before_them_and_verify(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "audit.jsonl"
    tokens = sealed_log(path, key, 7)
    events = [record["event"] for record in read_audit(path)]
    # every 3 records, and one at close for the last record
    assert events == ["end"] * 3 + ["checkpoint"] + ["end"] * 3 + ["checkpoint"] + ["end", "checkpoint"]
    report = verify([str(path)], seals(key))
    assert report.problem is None and report.checkpoints == 3 and report.sealed_seq == 9
    assert "sealed up to seq 9, 0 later records unsealed" in summary(report, 1)
    assert len(tokens) == 3 and parse_token(tokens[-1]).seq == 9


def test_records_after_the_last_checkpoint_are_reported_unsealed(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sealed_log(path, key, 6)
    plain = AuditLog(str(path))  # a writer without the key (or a forger) appends two more
    plain.write("end")
    plain.write("end")
    plain.close()
    report = verify([str(path)], seals(key))
    assert report.problem is None and "2 later records unsealed" in summary(report, 1)


def test_a_rewritten_and_rechained_history_is_caught(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sealed_log(path, key, 6)
    assert verify([str(path)]).problem is None
    rewrite(path, {2: {"n": 99}})
    assert verify([str(path)]).problem is None  # the unkeyed chain cannot tell
    problem = verify([str(path)], seals(key)).problem
    assert problem is not None and problem.kind == "forged" and "does not seal the record" in problem.message


def test_a_checkpoint_edited_to_match_does_not_verify(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sealed_log(path, key, 3)
    original = read_audit(path)
    rewrite(path, {2: {"n": 99}})
    # recompute record 3's hash as the forger would and claim the checkpoint seals it
    lines = path.read_bytes().splitlines()
    forged_head = hashlib.sha256(lines[2]).hexdigest()
    rewrite(path, {2: {"n": 99}, 4: {"sealed_head": forged_head}})
    assert original[3]["sealed_head"] != forged_head
    problem = verify([str(path)], seals(key)).problem
    assert problem is not None and problem.kind == "forged" and "signature does not verify" in problem.message


def test_a_cut_tail_shows_against_a_checkpoint_kept_elsewhere(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "audit.jsonl"
    tokens = sealed_log(path, key, 9)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:8]))  # cut after the second checkpoint
    assert verify([str(path)], seals(key)).problem is None  # alone, the cut cannot show
    problem = verify([str(path)], seals(key, *tokens)).problem
    assert problem is not None and problem.kind == "cut" and "seals seq" in problem.message


def test_a_record_a_kept_checkpoint_sealed_must_be_that_record(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "audit.jsonl"
    tokens = sealed_log(path, key, 3)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]))  # drop the checkpoint record, then re-forge record 3
    rewrite(path, {3: {"n": 42}})
    problem = verify([str(path)], seals(key, *tokens)).problem
    assert problem is not None and problem.kind == "forged" and "seq 3" in problem.message


def test_a_quiet_server_seals_after_the_interval(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), sealing=Sealing(load_signer(str(key)), every=1000, interval_s=0.05))
    log.write("end")
    log.seal_if_due()
    assert [r["event"] for r in read_audit(path)] == ["end"]  # not yet due
    time.sleep(0.06)
    log.seal_if_due()
    log.seal_if_due()  # nothing new to seal: no second checkpoint
    assert [r["event"] for r in read_audit(path)] == ["end", "checkpoint"]
    log.close()
    assert [r["event"] for r in read_audit(path)] == ["end", "checkpoint"]


def test_cli_verify_with_the_key_and_a_journal_excerpt(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "audit.jsonl"
    tokens = sealed_log(path, key, 9)
    journal = tmp_path / "journal.txt"
    journal.write_text(
        "".join(f"Dec 02 10:00:0{i} host bastion[1]: audit checkpoint {t}\n" for i, t in enumerate(tokens))
    )
    pub = str(key) + ".pub"
    ok = subprocess.run(
        [BASTION, "audit", "verify", "--key", pub, "--checkpoints-from", str(journal), str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and "sealed up to seq" in ok.stdout, ok.stdout + ok.stderr
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:5]))
    cut = subprocess.run(
        [BASTION, "audit", "verify", "--key", pub, "--checkpoints-from", str(journal), str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cut.returncode == 1 and "cut" in cut.stdout
    other = tmp_path / "other.pem"
    checkpoint.generate(str(other))
    wrong = subprocess.run(
        [BASTION, "audit", "verify", "--key", str(other) + ".pub", "--checkpoint", tokens[0], str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert wrong.returncode == 2 and "does not verify" in wrong.stderr
    lonely = subprocess.run(
        [BASTION, "audit", "verify", "--checkpoint", tokens[0], str(path)], capture_output=True, text=True, timeout=30
    )
    assert lonely.returncode == 2 and "need --key" in lonely.stderr


@pytest.mark.anyio
async def test_a_server_with_a_key_seals_its_log(tmp_path: Path, key: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("Dec  1 10:00:00 host sshd[1]: Failed password for root from 10.0.0.5 port 22 ssh2\n")
    policy = write_policy(tmp_path, [log])
    policy.write_text(
        policy.read_text().replace("[audit]\n", f'[audit]\ncheckpoint_every = 4\ncheckpoint_key = "{key}"\n')
    )
    async with bastion_client(policy) as client:
        for _ in range(3):
            assert not (await client.call_tool("query_logs", {"log_path": str(log), "pattern": "Failed"})).is_error
    audit = tmp_path / "audit.jsonl"
    report = verify([str(audit)], seals(key))
    assert report.problem is None and report.checkpoints >= 2
    assert read_audit(audit)[-1]["event"] == "checkpoint"  # the last records were sealed at stop
