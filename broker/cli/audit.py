"""`bastion audit verify FILE...`: check the hash chain (the checks are in broker/audit/verify.py)."""

from __future__ import annotations

import argparse
import sys

from broker.audit import verify as audit_verify
from broker.cli import exit_codes


def cmd_audit_verify(args: argparse.Namespace) -> int:
    try:
        report = audit_verify.verify(args.files)
    except OSError as exc:
        print(f"bastion audit verify: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return exit_codes.CONFIG
    for note in report.notes:
        print(f"note: {note}")
    print(audit_verify.summary(report, len(args.files)))
    return exit_codes.AUDIT_PROBLEM if report.problem is not None else exit_codes.OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="audit log tools").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser("verify", help="check the hash chain of audit log files; exit 1 at the first problem")
    verify.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="audit log files, oldest first (audit.jsonl.2 audit.jsonl.1 audit.jsonl)",
    )
    verify.set_defaults(func=cmd_audit_verify)
