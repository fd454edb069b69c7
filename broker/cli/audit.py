"""`bastion audit verify FILE...`: check the hash chain (the checks are in broker/audit/verify.py),
and with `--key` the signed checkpoints; `bastion audit keygen PATH`: a checkpoint key pair."""

from __future__ import annotations

import argparse
import re
import sys

from broker.audit import verify as audit_verify
from broker.cli import exit_codes

# A checkpoint token anywhere in a line, e.g. a journalctl line "... audit checkpoint <token>".
TOKEN = re.compile(r"bastion-checkpoint:v1:[0-9a-f]{16}:\d+:[0-9a-f]{64}:[A-Za-z0-9_-]+")
MAX_CHECKPOINT_FILE_BYTES = 64 << 20


def _seals(args: argparse.Namespace) -> audit_verify.Seals | None:
    """The key and kept checkpoints from the options; ValueError/CheckpointKeyError if unusable."""
    if not args.key:
        if args.checkpoint or args.checkpoints_from:
            raise ValueError("--checkpoint and --checkpoints-from need --key")
        return None
    from broker.audit import checkpoint  # cryptography only when asked

    key = checkpoint.load_public_key(args.key)
    tokens = list(args.checkpoint)
    for path in args.checkpoints_from:
        with open(path, encoding="utf-8", errors="replace") as file:
            tokens += TOKEN.findall(file.read(MAX_CHECKPOINT_FILE_BYTES))
    external: dict[int, checkpoint.Checkpoint] = {}
    for token in tokens:
        kept = checkpoint.parse_token(token)
        if not kept.valid(key):
            raise ValueError(f"checkpoint for seq {kept.seq} does not verify with {args.key}")
        external[kept.seq] = kept
    return audit_verify.Seals(key, external)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    try:
        seals = _seals(args)
        report = audit_verify.verify(args.files, seals)
    except OSError as exc:
        print(f"bastion audit verify: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return exit_codes.CONFIG
    except Exception as exc:  # noqa: BLE001 - a bad key or token: say which, no trace
        print(f"bastion audit verify: {exc}", file=sys.stderr)
        return exit_codes.CONFIG
    for note in report.notes:
        print(f"note: {note}")
    print(audit_verify.summary(report, len(args.files)))
    return exit_codes.AUDIT_PROBLEM if report.problem is not None else exit_codes.OK


def cmd_audit_keygen(args: argparse.Namespace) -> int:
    from broker.audit import checkpoint

    try:
        public, key_id = checkpoint.generate(args.path)
    except OSError as exc:
        print(f"bastion audit keygen: cannot write {exc.filename or args.path}: {exc.strerror}", file=sys.stderr)
        return exit_codes.CONFIG
    print(f"private key: {args.path} (mode 0600: only for the server; never copy it elsewhere)")
    print(f"public key:  {public} (for verifiers; key id {key_id})")
    print(f'add to the policy\'s [audit] table:  checkpoint_key = "{args.path}"')
    return exit_codes.OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="audit log tools").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser("verify", help="check the hash chain of audit log files; exit 1 at the first problem")
    verify.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="audit log files, oldest first (audit.jsonl.2 audit.jsonl.1 audit.jsonl)",
    )
    verify.add_argument("--key", metavar="PUB", help="public key (from audit keygen): check the signed checkpoints")
    verify.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a checkpoint kept elsewhere (bastion-checkpoint:v1:...): detects a cut tail; repeatable",
    )
    verify.add_argument(
        "--checkpoints-from",
        action="append",
        default=[],
        metavar="FILE",
        help="every checkpoint token found in FILE (e.g. journalctl -u bastion output); repeatable",
    )
    verify.set_defaults(func=cmd_audit_verify)
    keygen = audit.add_parser("keygen", help="create an Ed25519 key pair for signed audit checkpoints")
    keygen.add_argument("path", metavar="PATH", help="private key file to create (PATH.pub gets the public key)")
    keygen.set_defaults(func=cmd_audit_keygen)
