"""`bastion intel compile --policy FILE`: turn the policy's feeds into the database.

Runs as an operator command (e.g. from the timer that downloads the feeds),
never in the request path. The previous database at the same path supplies
each entry's first_seen/last_seen history; the new one replaces it atomically.
"""

from __future__ import annotations

import argparse
import os
import sys

from bastion_wire.intel_db import IntelDatabaseError
from broker.cli import exit_codes
from broker.cli.options import add_state_dir
from broker.files.output_dir import OutputDirError, prepare_directory
from broker.intel.compile import CompileReport, FeedSource, compile_feeds
from broker.policy import Intel, PolicyError, load_policy


def sources(intel: Intel) -> list[FeedSource]:
    return [
        FeedSource(
            name=feed.name,
            path=feed.path,
            fmt=feed.format,
            category=feed.category,
            confidence=feed.confidence,
            column=feed.column,
            header=feed.header,
            delimiter=feed.delimiter,
        )
        for feed in intel.feeds
    ]


def _print_report(report: CompileReport, output: str) -> None:
    for feed in report.feeds:
        print(
            f"  {feed.name:<28} {feed.entries:>9} entries  {feed.malformed:>5} malformed lines"
            f"  sha256 {feed.sha256[:16]}…  ({feed.source})"
        )
        for example in report.malformed_examples.get(feed.name, [])[:3]:
            print(f"      malformed: {example}")
    for name in report.dropped_feeds:
        print(f"  {name}: no longer in the policy; its history was dropped")
    print(
        f"compiled {report.entries} entries ({report.active} listed now,"
        f" {report.entries - report.active} history only) "
        f"into {report.intervals_v4} IPv4 and {report.intervals_v6} IPv6 ranges in {report.seconds:.2f} s -> {output}"
    )


def cmd_intel_compile(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy, args.state_dir)
    except PolicyError as exc:
        print(f"bastion intel compile: policy error: {exc}", file=sys.stderr)
        return exit_codes.CONFIG
    intel = policy.intel
    if intel is None or not intel.feeds:
        print("bastion intel compile: the policy has no [intel] section with [[intel.feeds]]", file=sys.stderr)
        return exit_codes.CONFIG
    previous = intel.database if os.path.exists(intel.database) else None
    try:
        prepare_directory(intel.database, policy.state_root or None, mode=0o755)  # e.g. a fresh checkout's var/
        report = compile_feeds(sources(intel), intel.database, previous=previous, history_days=intel.history_days)
    except OutputDirError as exc:
        print(f"bastion intel compile: cannot write intel database {intel.database}: {exc}", file=sys.stderr)
        return exit_codes.CONFIG
    except (OSError, ValueError, IntelDatabaseError) as exc:
        print(f"bastion intel compile: {exc}", file=sys.stderr)
        return exit_codes.CONFIG
    _print_report(report, intel.database)
    return exit_codes.OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    intel = commands.add_parser("intel", help="threat-intel tools").add_subparsers(dest="intel_command", required=True)
    compile_ = intel.add_parser("compile", help="compile the policy's feeds into the intel database (keeps history)")
    compile_.add_argument("--policy", required=True, help="policy TOML file with an [intel] section")
    add_state_dir(compile_)
    compile_.set_defaults(func=cmd_intel_compile)
