"""A scripted MCP client session against the example policy (`make demo`).

Starts `bastion serve --policy examples/policy.toml` over stdio with the mcp
SDK's own client, lists the tools, the logs (list_logs) and resources, completes a prompt's
log_path, runs real queries on the
bundled sample logs and on the sample journal (query_journal), reads a log resource, and
shows refused calls. The sample journal (examples/journal/, synthetic data) is written
first by examples/generate_journal.py with the real systemd-journal-remote, unless it is
up to date; without that tool the journal searches are skipped with the reason.

`--state-dir DIR` is passed on to bastion (`make demo` uses the checkout's var/);
without it the audit log and intel database go to bastion's default state
directory. When the server refuses to start, the demo prints the server's own
one-line reason and exits non-zero: never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import PromptReference

if TYPE_CHECKING:
    from broker.policy import Policy

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
LOGS = HERE / "logs"
BASTION = Path(sys.executable).with_name("bastion")
WIDTH = min(shutil.get_terminal_size((110, 20)).columns, 140)
JOURNAL = HERE / "journal"
JOURNAL_SOURCE = "fleet"  # the example policy's [[journals]] entry

QUERIES = [
    ("SSH brute force: failed passwords", LOGS / "auth.log", r"Failed password for (invalid user )?[a-z]+ from ", 8),
    (
        "An accepted login for the account that was being brute-forced",
        LOGS / "auth.log",
        r"Accepted password for deploy|COMMAND=/usr/bin/cat /etc/shadow",
        5,
    ),
    ("Web scanners probing nginx", LOGS / "access.log", r"Nikto|sqlmap|/\.env|wp-login\.php", 6),
]


# Searches over the rotated auth logs (auth.log, .1, .2.gz, .3.gz): newest first, with a time window.
WINDOWED = [
    (
        "The most persistent source, across all four days of rotated logs (newest first)",
        {"pattern": r"Failed password for .* from 218\.92\.0\.107 port ", "max_lines": 6, "order": "newest_first"},
    ),
    (
        "Per-file counts of failed passwords on Nov 22-23 only (time window over rotations, one of them gzip'd)",
        {
            "pattern": "Failed password",
            "count_only": True,
            "since": "2026-11-22T00:00:00Z",
            "until": "2026-11-23T23:59:59Z",
        },
    ),
    (
        "The intruder probing the 'deploy' account the day before the break-in, with context",
        {
            "pattern": r"Failed password for deploy from 193\.32\.162\.157",
            "max_lines": 2,
            "context": 1,
            "since": "2026-11-23T00:00:00Z",
            "until": "2026-11-23T23:59:59Z",
        },
    ),
]


# Searches of the sample journal: three hosts' journal files, as a collector holds them.
JOURNAL_QUERIES = [
    (
        "The intruder's passwords for 'deploy' per host: it tried web-02 before web-01",
        {"pattern": r"Failed password for deploy from 193\.32\.162\.157 ", "count_only": True},
    ),
    (
        "The break-in on web-01 (03:00-04:00): the accepted password, the session, the sudo",
        {
            "pattern": r"Accepted password|COMMAND=|session opened for user deploy",
            "hostname": "web-01",
            "since": "2026-11-24T03:00:00Z",
            "until": "2026-11-24T04:00:00Z",
            "max_lines": 6,
        },
    ),
    (
        "Errors and worse anywhere in the fleet, most recent first (priority err)",
        {"pattern": ".", "priority": "err", "max_lines": 4, "order": "newest_first"},
    ),
    (
        "The most persistent source in sshd's entries, per host",
        {"pattern": r"218\.92\.0\.107", "unit": "ssh", "count_only": True},
    ),
    (
        "An attacker-chosen user name with a terminal escape in it: shown escaped, never sent raw",
        {"pattern": r"Invalid user .*root.* from 45\.155\.205\.233", "hostname": "web-02", "max_lines": 1},
    ),
]


def heading(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, WIDTH - len(text) - 4))


def show_lines(structured: dict) -> None:
    for line in structured["lines"]:
        print(textwrap.shorten(f"  {line['line_no']:>6}: {line['text']}", WIDTH, placeholder=" …"))
    if structured["truncated"]:
        print(f"  … truncated ({structured['truncated_reason']})")


async def run_queries(client: Client) -> None:
    for title, path, pattern, max_lines in QUERIES:
        heading(f"query_logs: {title}")
        print(f"  log_path={path.name}  pattern={pattern!r}  max_lines={max_lines}")
        result = await client.call_tool(
            "query_logs", {"log_path": str(path), "pattern": pattern, "max_lines": max_lines}
        )
        if result.is_error:
            print("  ERROR:", result.content[0].text)
        else:
            show_lines(result.structured_content)


async def structured(client: Client, tool: str, arguments: dict) -> dict | None:
    """The call's structured result, or None after showing its error."""
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        print("  ERROR:", result.content[0].text)
        return None
    return result.structured_content


async def run_windowed(client: Client) -> None:
    for title, arguments in WINDOWED:
        heading(f"query_logs: {title}")
        print(f"  log_path=auth.log (+ rotations)  {arguments}")
        data = await structured(client, "query_logs", {"log_path": str(LOGS / "auth.log"), **arguments})
        if data is None:
            continue
        if data["total_matches"] is not None:
            for file in data["files"]:
                print(f"  {Path(file['path']).name:<16} {file['matches']:>5} matching lines")
            continue
        for line in data["lines"]:
            mark = "-" if line["context"] else ":"
            print(
                textwrap.shorten(
                    f"  {Path(line['file']).name}:{line['line_no']}{mark} {line['text']}", WIDTH, placeholder=" …"
                )
            )


async def run_journal_queries(client: Client, journal_ready: str | None) -> None:
    if journal_ready is not None:
        heading("query_journal: skipped")
        print(f"  {journal_ready}")
        return
    for title, arguments in JOURNAL_QUERIES:
        heading(f"query_journal: {title}")
        print(f"  source={JOURNAL_SOURCE}  {arguments}")
        data = await structured(client, "query_journal", {"source": JOURNAL_SOURCE, **arguments})
        if data is None:
            continue
        if data["total_matches"] is not None:
            for host in data["hosts"]:
                print(f"  {host['host']:<10} {host['matches']:>5} matching entries")
            continue
        for entry in data["lines"]:
            where = f"{entry['identifier']}[{entry['pid']}]" if entry["pid"] is not None else entry["identifier"]
            text = f"  {entry['time']} {entry['host']} {where}: {entry['message']}"
            print(textwrap.fill(text, WIDTH, subsequent_indent=" " * 6, break_on_hyphens=False))
        if data["truncated"]:
            print(f"  … truncated ({data['truncated_reason']})")


def write_sample_journal(policy: Policy) -> str | None:
    """Write the example's sample journal unless it is up to date; None when it is ready,
    else why the journal searches are skipped. Only where the policy serves it as `fleet`."""
    if not any(source.name == JOURNAL_SOURCE and Path(source.path) == JOURNAL for source in policy.journals):
        return f"the policy has no journal source {JOURNAL_SOURCE!r} reading {JOURNAL}"
    from generate_journal import JournalToolMissing, generate

    heading("generate_journal: the sample journal (synthetic), written by systemd-journal-remote")
    try:
        written = generate(JOURNAL)
    except (JournalToolMissing, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"  not written: {exc}")
        return f"no sample journal ({exc})"
    print(f"  {JOURNAL}: {'written' if written else 'up to date'} (see {JOURNAL.name}/SAMPLE-DATA.txt)")
    return None


async def show_refusals(client: Client) -> None:
    heading("Refused before any worker starts")
    attempts = [
        {"log_path": str(LOGS / ".." / ".." / "etc" / "shadow"), "pattern": "root"},
        {"log_path": "/etc/shadow", "pattern": "root"},
        {"log_path": str(LOGS / "auth.lgo"), "pattern": "root"},  # a typo: the refusal names the closest logs
        {"log_path": str(LOGS / "auth.log"), "pattern": r"(a*)*\1"},
        {"log_path": str(LOGS / "auth.log"), "pattern": "root", "max_lines": 100000},
    ]
    for arguments in attempts:
        result = await client.call_tool("query_logs", arguments)
        print(f"  {arguments}\n    -> {result.content[0].text}")


class DemoFailed(Exception):
    """A step of the demo failed; the message is the reason to show."""


def compile_intel(options: list[str]) -> None:
    heading("bastion intel compile: the sample feeds -> the intel database")
    done = subprocess.run([str(BASTION), "intel", "compile", *options], capture_output=True, text=True, timeout=300)
    for line in (done.stdout + done.stderr).splitlines():
        print(f"  {line}"[:WIDTH])
    if done.returncode != 0:
        raise DemoFailed(f"bastion intel compile failed: {last_meaningful(done.stderr)}")


def last_meaningful(text: str) -> str:
    """The line that says why: the last error the server logged, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if " ERROR " in line or line.startswith("bastion: ERROR")]
    return (errors or lines or ["(it printed nothing)"])[-1]


async def check_attackers(client: Client) -> None:
    """The brute-force sources found above, confirmed (or not) by the sample feeds."""
    from generate_logs import BRUTE_FORCE_IPS

    for address in (*BRUTE_FORCE_IPS[:5], "10.0.1.6"):
        heading(f"check_ip_reputation: {address}")
        result = await client.call_tool("check_ip_reputation", {"ip_address": address, "include_history": True})
        for line in result.content[0].text.splitlines():
            print(textwrap.fill(line, WIDTH, initial_indent="  ", subsequent_indent="      "))


def date_sample_logs() -> None:
    """RFC 3164 stamps have no year: it comes from each file's modification time. A fresh
    checkout dates every file today, so give the samples the times logrotate would have left."""
    day_end = {"": 25, ".1": 24, ".2.gz": 23, ".3.gz": 22}  # auth.log covers Nov 24, .1 Nov 23, ...
    for path in LOGS.iterdir():
        suffix = path.name.split(".log", 1)[1] if ".log" in path.name else ""
        if path.is_file() and suffix in day_end:
            stamp = datetime(2026, 11, day_end[suffix], tzinfo=UTC).timestamp()
            os.utime(path, (stamp, stamp))


async def session(options: list[str], errlog: TextIO, journal_ready: str | None) -> None:
    params = StdioServerParameters(command=str(BASTION), args=["serve", *options], env=server_env())
    async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=30) as client:
        heading("Tools")
        for tool in (await client.list_tools()).tools:
            print(f"  {tool.name}: {tool.description}")
        heading("list_logs: the allowlisted logs, for hosts that show no resources")
        listed = await client.call_tool("list_logs", {})
        for line in listed.content[0].text.splitlines():
            print(f"  {line}"[:WIDTH])
        heading("completion/complete: log_path of triage_auth_failures, as a host offers it")
        typed = str(LOGS / "auth")
        completion = await client.complete(
            PromptReference(name="triage_auth_failures"), {"name": "log_path", "value": typed}
        )
        print(f"  {typed}… -> {', '.join(os.path.basename(value) for value in completion.completion.values)}")
        heading("Resources (allowlisted logs)")
        resources = (await client.list_resources()).resources
        for resource in resources:
            print(f"  {resource.uri}  ({resource.description})")
        await run_queries(client)
        await run_windowed(client)
        await run_journal_queries(client, journal_ready)
        heading(f"resources/read: last lines of {resources[0].name}")
        contents = (await client.read_resource(resources[0].uri)).contents[0]
        for line in contents.text.splitlines()[-6:]:
            print(textwrap.shorten(f"  {line}", WIDTH, placeholder=" …"))
        await check_attackers(client)
        await show_refusals(client)


def server_env() -> dict[str, str]:
    """PATH, and what locates the default state directory (when --state-dir is not given)."""
    keep = ("PATH", "HOME", "XDG_STATE_HOME")
    return {name: os.environ[name] for name in keep if name in os.environ}


async def serve_and_show(options: list[str], journal_ready: str | None) -> None:
    # The server's stderr goes to a file, not the terminal, so that a refusal to start
    # can be reported as its one line instead of the client's connection error.
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        try:
            await session(options, errlog, journal_ready)
        except Exception as exc:  # noqa: BLE001 - any failure of the session is reported, never raised
            errlog.seek(0)
            said = errlog.read()
            reason = last_meaningful(said) if said.strip() else f"{type(exc).__name__}: {exc}"
            raise DemoFailed(
                f"the MCP session with bastion serve failed: {reason}\n"
                f"demo: `bastion doctor {' '.join(options)}` (in a checkout: make doctor) shows what to change"
            ) from None
        errlog.seek(0)
        heading("What bastion serve logged (stderr)")
        for line in errlog.read().splitlines():
            print(f"  {line}")


def show_audit(audit: Path) -> None:
    heading("Audit")
    print(f"  every call above has a begin and an end record in {audit}")
    verdict = subprocess.run([str(BASTION), "audit", "verify", str(audit)], capture_output=True, text=True, timeout=120)
    print(f"  $ bastion audit verify {audit.name}")
    for line in (verdict.stdout + verdict.stderr).splitlines():
        print(f"  {line}")
    if verdict.returncode != 0:
        raise DemoFailed("the audit chain did not verify")


def read_policy(policy: Path, state_dir: str | None) -> Policy:
    from broker.policy import PolicyError, load_policy

    try:
        return load_policy(policy, state_dir)
    except PolicyError as exc:
        raise DemoFailed(f"policy error: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A scripted MCP session against Bastion's example policy.")
    parser.add_argument(
        "--policy", type=Path, default=HERE / "policy.toml", help="policy file (default: the example's)"
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", help="passed on to bastion: where the audit log and intel database go"
    )
    args = parser.parse_args(argv)
    options = ["--policy", str(args.policy), *(["--state-dir", args.state_dir] if args.state_dir else [])]
    try:
        policy = read_policy(args.policy, args.state_dir)
        date_sample_logs()
        compile_intel(options)
        journal_ready = write_sample_journal(policy)
        anyio.run(serve_and_show, options, journal_ready)
        show_audit(Path(policy.audit.path))
    except DemoFailed as exc:
        print(f"\ndemo: {exc}", file=sys.stderr)
        return 1
    except (OSError, subprocess.SubprocessError) as exc:  # bastion missing, a step hanging past its timeout
        print(f"\ndemo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
