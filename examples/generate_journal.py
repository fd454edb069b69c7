#!/usr/bin/env python3
"""Sample journal for Bastion's example: three hosts' journals, written by the real tool.

The day of the sample logs (2026-11-24, UTC) as a small fleet's journal collector
would hold it: one journal file per host, ``remote-web-01.journal``,
``remote-web-02.journal`` and ``remote-db-01.journal``, as ``systemd-journal-remote
--split-mode=host`` names them. The entries are generated here from a seeded PRNG and
handed to ``systemd-journal-remote`` in the Journal Export Format
(https://systemd.io/JOURNAL_EXPORT_FORMATS/), so the files are real journal files,
written by journald's own code; nothing here writes the journal format itself.

The story is the sample logs' story, seen from the fleet: the same brute-force sources
try every host; the intruder (``COMPROMISED_LOGIN``) tries ``deploy`` on web-02 first,
then gets in on web-01 at 03:41:17 and runs ``sudo /usr/bin/cat /etc/shadow``. Around
it: cron, systemd timers, kernel firewall blocks, PostgreSQL on db-01 (which reboots
for a kernel update at 14:02, so it has two boots), a kernel OOM kill on web-02 and one
sshd line with an ANSI escape in the user name, for the output sanitizer.

Journal files carry random identifiers (file and sequence-number ids), so the files
differ from run to run while their entries do not. ``SAMPLE-DATA.txt`` beside them says
that this is synthetic sample data and records the digest of the entries they were
written from: when it matches, the files are up to date and nothing is rewritten.
Every run writes a new directory beside the old one and swaps it in at the end, so an
interrupted run leaves the previous journal (or none), never half of one.

Needs ``systemd-journal-remote`` (Debian package systemd-journal-remote).

Usage: python examples/generate_journal.py [--out DIR] [--seed N] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate_logs import (  # noqa: E402 - the sample logs' story, shared with them
    ANSI_USERNAME,
    BRUTE_FORCE_IPS,
    COMPROMISED_FAILURES,
    COMPROMISED_LOGIN,
    PRIVESC_COMMAND,
    START,
    UIDS,
)

DEFAULT_SEED = 20261124
DEFAULT_OUT = HERE / "journal"
STAMP_NAME = "SAMPLE-DATA.txt"
JOURNAL_REMOTE_PATHS = (Path("/lib/systemd/systemd-journal-remote"), Path("/usr/lib/systemd/systemd-journal-remote"))
RUN_TIMEOUT_S = 120

HOSTS = ("web-01", "web-02", "db-01")
DAY_S = 24 * 3600
START_USEC = int(START.timestamp()) * 1_000_000
UPTIME_AT_START_S = {"web-01": 1_187_342.0, "web-02": 864_211.5, "db-01": 2_419_007.25}
DB_REBOOT_AT_S = 14 * 3600 + 2 * 60  # db-01 reboots for a kernel update at 14:02
DB_BOOT_TOOK_S = 41.0  # from the last entry of the old boot to the first of the new one
INTRUDER_WEB02_AT_S = 3 * 3600 + 18 * 60  # the intruder tries deploy on web-02 first
INTRUDER_WEB02_FAILURES = 12
INVALID_USERS = ("admin", "test", "oracle", "ubuntu", "git", "postgres", "user", "ftpuser", "pi", "support")
SSHD_UNIT = "ssh.service"


@dataclass(frozen=True)
class Event:
    """One journal entry of a host, before its boot and monotonic time are known."""

    at_s: float  # seconds after START
    identifier: str
    message: str | bytes
    priority: int = 6
    pid: int | None = None
    unit: str | None = None
    transport: str = "syslog"
    extra: Mapping[str, str] = field(default_factory=dict)


def export_field(name: str, value: bytes) -> bytes:
    """One field in the Journal Export Format: `NAME=value`, or for a value with a
    newline or bytes that are not UTF-8 the binary-safe form (the name, a newline, the
    length as a little-endian 64-bit integer, the bytes)."""
    if b"\n" not in value and _is_utf8(value):
        return name.encode() + b"=" + value + b"\n"
    return name.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def export_entries(entries: Iterable[Mapping[str, str | bytes]]) -> bytes:
    """Entries (field name -> value) in the Journal Export Format, each ended by an empty line."""
    parts: list[bytes] = []
    for fields in entries:
        for name, value in fields.items():
            parts.append(export_field(name, value.encode() if isinstance(value, str) else value))
        parts.append(b"\n")
    return b"".join(parts)


def stable_id(*parts: str) -> str:
    """A 128-bit id (boot or machine) as journald writes it: 32 hex digits, the same every run."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


# --- What happens on each host ------------------------------------------------


def sshd(rng: random.Random, at_s: float, message: str | bytes, priority: int = 6) -> Event:
    pid = 20000 + int(at_s) % 40000 + rng.randrange(7)
    return Event(at_s, "sshd", message, priority, pid, SSHD_UNIT, extra={"_COMM": "sshd", "_EXE": "/usr/sbin/sshd"})


def failed_password(rng: random.Random, at_s: float, ip: str, user: str, invalid: bool) -> Event:
    port = rng.randrange(32768, 61000)
    who = f"invalid user {user}" if invalid else user
    return sshd(rng, at_s, f"Failed password for {who} from {ip} port {port} ssh2")


def brute_force(rng: random.Random, start_s: float, ip: str, tries: int) -> list[Event]:
    """A dictionary run from `ip`: invalid users and root, a few seconds apart."""
    events = []
    at = start_s
    for _ in range(tries):
        at += rng.uniform(2.0, 9.0)
        user = rng.choice(INVALID_USERS + ("root",))
        if user != "root":
            events.append(sshd(rng, at, f"Invalid user {user} from {ip} port {rng.randrange(32768, 61000)}"))
        events.append(failed_password(rng, at + 0.4, ip, user, invalid=user != "root"))
    events.append(sshd(rng, at + 1.1, f"Disconnecting authenticating user root {ip} port 22: Too many authentication"))
    return events


def background_attacks(rng: random.Random, host: str) -> list[Event]:
    """Every host sees the same sources; db-01 only the most persistent one (it faces the internet less)."""
    sources = BRUTE_FORCE_IPS if host != "db-01" else ("218.92.0.107",)
    events = []
    for ip in sources:
        for _ in range(rng.randint(2, 4)):
            events += brute_force(rng, rng.uniform(0, DAY_S - 600), ip, rng.randint(4, 9))
    return events


def intruder_tries(
    rng: random.Random, failures: int, start_s: float | None = None, end_s: float | None = None
) -> list[Event]:
    """The intruder's passwords for deploy, 3-6 s apart, from `start_s` or ending at `end_s`."""
    gaps = [rng.uniform(3.0, 6.0) for _ in range(failures)]
    at = start_s if start_s is not None else (end_s or 0.0) - sum(gaps)
    events = []
    for gap in gaps:
        at += gap
        events.append(failed_password(rng, at, COMPROMISED_LOGIN.ip, COMPROMISED_LOGIN.user, invalid=False))
    return events


def systemd(at_s: float, message: str, priority: int = 6) -> Event:
    return Event(at_s, "systemd", message, priority, 1, "init.scope", "journal")


def logind(at_s: float, message: str) -> Event:
    return Event(at_s, "systemd-logind", message, 6, 612, "systemd-logind.service", "journal")


def kernel(at_s: float, message: str, priority: int) -> Event:
    return Event(at_s, "kernel", message, priority, transport="kernel")  # no pid, no unit


def intrusion(rng: random.Random) -> list[Event]:
    """web-01: the last failures, the accepted password, the session and the sudo that reads /etc/shadow."""
    login_s = (COMPROMISED_LOGIN.at - START).total_seconds()
    user, uid, ip, port = COMPROMISED_LOGIN.user, COMPROMISED_LOGIN.uid, COMPROMISED_LOGIN.ip, COMPROMISED_LOGIN.port
    pid, session = 31337, 1877
    sudo_fields = {"_COMM": "sudo", "_EXE": "/usr/bin/sudo", "_CMDLINE": f"sudo {PRIVESC_COMMAND}", "_UID": str(uid)}

    def sudo(at_s: float, message: str, priority: int = 6) -> Event:
        return Event(at_s, "sudo", message, priority, pid + 41, f"session-{session}.scope", extra=sudo_fields)

    def sshd_session(at_s: float, message: str) -> Event:
        return Event(at_s, "sshd", message, 6, pid, SSHD_UNIT)

    return [
        *intruder_tries(rng, COMPROMISED_FAILURES, end_s=login_s - 4.3),
        sshd_session(login_s, f"Accepted password for {user} from {ip} port {port} ssh2"),
        sshd_session(login_s + 0.02, f"pam_unix(sshd:session): session opened for user {user}(uid={uid}) by (uid=0)"),
        logind(login_s + 0.05, f"New session {session} of user {user}."),
        sudo(login_s + 171.3, f"{user} : TTY=pts/1 ; PWD=/home/{user} ; USER=root ; COMMAND={PRIVESC_COMMAND}", 5),
        sudo(login_s + 171.31, f"pam_unix(sudo:session): session opened for user root(uid=0) by {user}(uid={uid})"),
        sudo(login_s + 171.4, "pam_unix(sudo:session): session closed for user root"),
        sshd_session(login_s + 652.8, f"pam_unix(sshd:session): session closed for user {user}"),
        logind(login_s + 652.9, f"Session {session} logged out. Waiting for processes to exit."),
    ]


def admin_logins(rng: random.Random, host: str) -> list[Event]:
    """Office-hours public-key logins of the team, from the Ansible host."""
    events = []
    for user in ("alice", "ops") if host != "db-01" else ("ops",):
        at = rng.uniform(8 * 3600, 17 * 3600)
        pid = rng.randrange(40000, 60000)
        events += [
            Event(
                at,
                "sshd",
                f"Accepted publickey for {user} from 10.0.1.6 port {rng.randrange(40000, 60000)} ssh2: "
                f"ED25519 SHA256:{stable_id(host, user)[:43]}",
                6,
                pid,
                SSHD_UNIT,
            ),
            Event(
                at + 0.02,
                "sshd",
                f"pam_unix(sshd:session): session opened for user {user}(uid={UIDS[user]}) by (uid=0)",
                6,
                pid,
                SSHD_UNIT,
            ),
            Event(
                at + rng.uniform(300, 2400),
                "sshd",
                f"pam_unix(sshd:session): session closed for user {user}",
                6,
                pid,
                SSHD_UNIT,
            ),
        ]
    return events


def cron(rng: random.Random) -> list[Event]:
    """sysstat every ten minutes and the hourly run-parts, each in a cron PAM session."""
    events = []
    for minute in range(0, DAY_S // 60, 10):
        at = minute * 60 + rng.uniform(0.0, 0.5)
        pid = rng.randrange(3000, 30000)
        command = (
            "   cd / && run-parts --report /etc/cron.hourly"
            if minute % 60 == 17
            else "command -v debian-sa1 > /dev/null && debian-sa1 1 1"
        )
        extra = {"_COMM": "cron", "_EXE": "/usr/sbin/cron"}
        events += [
            Event(
                at,
                "CRON",
                "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
                6,
                pid,
                "cron.service",
                extra=extra,
            ),
            Event(at + 0.01, "CRON", f"(root) CMD ({command})", 6, pid, "cron.service", extra=extra),
            Event(
                at + 0.3,
                "CRON",
                "pam_unix(cron:session): session closed for user root",
                6,
                pid,
                "cron.service",
                extra=extra,
            ),
        ]
    return events


TIMERS = (  # (unit, description, hours)
    ("apt-daily.service", "Daily apt download activities", (6, 18)),
    ("logrotate.service", "Rotate log files", (0,)),
    ("man-db.service", "Daily man-db regeneration", (3,)),
    ("systemd-tmpfiles-clean.service", "Cleanup of Temporary Directories", (11,)),
)


def timers(rng: random.Random) -> list[Event]:
    events = []
    for unit, description, hours in TIMERS:
        for hour in hours:
            at = hour * 3600 + rng.uniform(60, 1800)
            events += [
                systemd(at, f"Starting {unit} - {description}..."),
                systemd(at + rng.uniform(0.2, 9), f"Finished {unit} - {description}."),
            ]
    return events


def firewall_blocks(rng: random.Random, host_ip: str, count: int) -> list[Event]:
    """UFW drops of port scans (kernel messages: no pid, no unit)."""
    events = []
    for _ in range(count):
        source = (
            rng.choice(BRUTE_FORCE_IPS[:5])
            if rng.random() < 0.4
            else f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        )
        port = rng.choice((23, 445, 3389, 5900, 6379, 8080, 9200, 27017))
        message = (
            f"[UFW BLOCK] IN=eth0 OUT= MAC=02:1a:4b:7c:2d:11:02:1a:4b:00:00:01:08:00 SRC={source} "
            f"DST={host_ip} LEN=44 TOS=0x00 PREC=0x00 TTL=241 ID={rng.randrange(65536)} PROTO=TCP "
            f"SPT={rng.randrange(1024, 65536)} DPT={port} WINDOW=1024 RES=0x00 SYN URGP=0"
        )
        events.append(kernel(rng.uniform(0, DAY_S), message, 4))
    return events


def web02_extras(rng: random.Random) -> list[Event]:
    """The intruder's first try, an OOM kill, and one hostile user name."""
    tries = intruder_tries(rng, INTRUDER_WEB02_FAILURES, start_s=INTRUDER_WEB02_AT_S)
    closed = sshd(
        rng,
        tries[-1].at_s + 1.3,
        f"Connection closed by authenticating user deploy {COMPROMISED_LOGIN.ip} "
        f"port {rng.randrange(32768, 61000)} [preauth]",
    )
    oom_at = 15 * 3600 + 7 * 60 + 33.2
    return [
        *tries,
        closed,
        kernel(
            oom_at,
            "Out of memory: Killed process 23411 (php-fpm8.2) total-vm:1893412kB, "
            "anon-rss:1502220kB, file-rss:0kB, shmem-rss:0kB, UID:33 pgtables:3332kB oom_score_adj:0",
            3,
        ),
        systemd(oom_at + 0.4, "php8.2-fpm.service: A process of this unit has been killed by the OOM killer.", 4),
        sshd(
            rng,
            9 * 3600 + 12 * 60 + 5.5,
            b"Invalid user "
            + ANSI_USERNAME
            + b" from 45.155.205.233 port "
            + str(rng.randrange(32768, 61000)).encode(),
        ),
    ]


def postgres(rng: random.Random) -> list[Event]:
    """db-01: checkpoints, and a CI job with a stale password."""
    unit = "postgresql@15-main.service"
    events = []
    for minute in range(3, DAY_S // 60, 15):
        buffers = rng.randrange(3, 900)
        events.append(
            Event(
                minute * 60 + rng.uniform(0, 2),
                "postgres",
                f"LOG:  checkpoint complete: wrote {buffers} buffers ({buffers / 163.84:.1f}%); "
                f"0 WAL file(s) added, 0 removed, 1 recycled",
                6,
                871,
                unit,
            )
        )
    for n in range(6):
        at = 10 * 3600 + 30 * 60 + n * 61.7
        events.append(
            Event(at, "postgres", 'FATAL:  password authentication failed for user "ci_reporting"', 3, 40100 + n, unit)
        )
    return events


def reboot(host: str) -> list[Event]:
    """db-01 goes down for the kernel update and comes back (the entries of the second boot)."""
    down = DB_REBOOT_AT_S
    up = down + DB_BOOT_TOOK_S
    return [
        systemd(down - 2.0, "Stopping postgresql@15-main.service - PostgreSQL Cluster 15-main..."),
        systemd(down, "Reached target reboot.target - System Reboot."),
        kernel(
            up,
            "Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) "
            "12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)",
            5,
        ),
        systemd(up + 6.2, f"Hostname set to <{host}>."),
        systemd(up + 9.8, "Started ssh.service - OpenBSD Secure Shell server."),
        systemd(up + 11.4, "Started postgresql@15-main.service - PostgreSQL Cluster 15-main."),
    ]


HOST_IPS = {"web-01": "10.0.1.23", "web-02": "10.0.1.24", "db-01": "10.0.1.30"}


def host_events(seed: int, host: str) -> list[Event]:
    rng = random.Random(f"{seed}/{host}")
    events = background_attacks(rng, host) + admin_logins(rng, host) + cron(rng) + timers(rng)
    events += firewall_blocks(rng, HOST_IPS[host], 60 if host != "db-01" else 15)
    if host == "web-01":
        events += intrusion(rng)
    elif host == "web-02":
        events += web02_extras(rng)
    else:
        events = [event for event in events + postgres(rng) + reboot(host) if not _while_down(event.at_s)]
    return sorted(events, key=lambda event: event.at_s)


def _while_down(at_s: float) -> bool:
    return DB_REBOOT_AT_S < at_s < DB_REBOOT_AT_S + DB_BOOT_TOOK_S


def entry_fields(host: str, event: Event) -> dict[str, str | bytes]:
    """The fields journald would have stored for `event` on `host`."""
    rebooted = host == "db-01" and event.at_s > DB_REBOOT_AT_S
    boot = 1 if rebooted else 0
    uptime = event.at_s - DB_REBOOT_AT_S - DB_BOOT_TOOK_S + 2.5 if rebooted else UPTIME_AT_START_S[host] + event.at_s
    fields: dict[str, str | bytes] = {
        "__REALTIME_TIMESTAMP": str(START_USEC + round(event.at_s * 1_000_000)),
        "__MONOTONIC_TIMESTAMP": str(round(uptime * 1_000_000)),
        "_BOOT_ID": stable_id("boot", host, str(boot)),
        "_MACHINE_ID": stable_id("machine", host),
        "_HOSTNAME": host,
        "_TRANSPORT": event.transport,
        "PRIORITY": str(event.priority),
        "SYSLOG_FACILITY": "0" if event.transport == "kernel" else "4" if event.identifier == "sshd" else "3",
        "SYSLOG_IDENTIFIER": event.identifier,
        "MESSAGE": event.message,
    }
    if event.pid is not None:
        fields["_PID"] = str(event.pid)
    if event.unit is not None:
        fields["_SYSTEMD_UNIT"] = event.unit
    fields.update(event.extra)
    return fields


def export_streams(seed: int = DEFAULT_SEED) -> dict[str, bytes]:
    """Each host's journal in the Journal Export Format, by file name."""
    return {
        f"remote-{host}.journal": export_entries(entry_fields(host, event) for event in host_events(seed, host))
        for host in HOSTS
    }


# --- Writing the files ---------------------------------------------------------


class JournalToolMissing(RuntimeError):
    """systemd-journal-remote is not installed."""


def journal_remote() -> Path:
    for path in JOURNAL_REMOTE_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise JournalToolMissing(
        "systemd-journal-remote is not installed (Debian: apt-get install systemd-journal-remote); "
        "it writes the sample journal files"
    )


def write_journal_file(tool: Path, path: Path, stream: bytes) -> int:
    """One journal file from one export stream; returns how many entries the tool wrote."""
    done = subprocess.run(
        [str(tool), f"--output={path}", "-"], input=stream, capture_output=True, timeout=RUN_TIMEOUT_S
    )
    # Every entry starts with its __REALTIME_TIMESTAMP (entry_fields), and no value here
    # holds a newline, so this counts the entries of the stream.
    expected = stream.count(b"\n\n__REALTIME_TIMESTAMP=") + stream.startswith(b"__REALTIME_TIMESTAMP=")
    said = done.stderr.decode(errors="replace").strip().splitlines()
    written = re.search(r"Finishing after writing (\d+) entries", said[-1] if said else "")
    if done.returncode != 0 or written is None:
        raise RuntimeError(f"systemd-journal-remote did not write {path.name}: {(said or ['(it said nothing)'])[-1]}")
    if int(written.group(1)) != expected:
        why = next((line for line in said if not line.startswith("Finishing")), "")
        raise RuntimeError(
            f"systemd-journal-remote did not write {path.name}: {written.group(1)} of {expected} entries {why}".strip()
        )
    return expected


def digest(streams: Mapping[str, bytes]) -> str:
    hashed = hashlib.sha256()
    for name in sorted(streams):
        hashed.update(name.encode() + b"\0" + hashlib.sha256(streams[name]).digest())
    return hashed.hexdigest()


def stamp_text(seed: int, streams: Mapping[str, bytes], counts: Mapping[str, int]) -> str:
    files = "".join(f"  {name}: {counts[name]} entries\n" for name in sorted(counts))
    return (
        "SYNTHETIC SAMPLE DATA - not recorded on any real system.\n\n"
        "Journal files of three imaginary hosts for Bastion's example policy, written by\n"
        "systemd-journal-remote from entries that examples/generate_journal.py generated\n"
        f"with a seeded PRNG (seed {seed}). Regenerate with `make journal`.\n\n"
        f"{files}\n"
        f"entries-sha256: {digest(streams)}\n"
    )


def up_to_date(out: Path, streams: Mapping[str, bytes]) -> bool:
    stamp = out / STAMP_NAME
    try:
        text = stamp.read_text(encoding="utf-8")
    except OSError:
        return False
    return f"entries-sha256: {digest(streams)}\n" in text and all((out / name).is_file() for name in streams)


def generate(out: Path, seed: int = DEFAULT_SEED, force: bool = False) -> bool:
    """Write the sample journal into `out` unless it is up to date; True if it was written."""
    streams = export_streams(seed)
    if not force and up_to_date(out, streams):
        return False
    tool = journal_remote()
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new-"))
    try:
        counts = {name: write_journal_file(tool, fresh / name, stream) for name, stream in streams.items()}
        (fresh / STAMP_NAME).write_text(stamp_text(seed, streams, counts), encoding="utf-8")
        fresh.chmod(0o755)
        swap_in(fresh, out)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return True


def swap_in(fresh: Path, out: Path) -> None:
    """Replace `out` with `fresh`: the old directory is moved aside first, then removed."""
    if not out.exists():
        fresh.rename(out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    out.rename(old / out.name)
    fresh.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write the sample journal of Bastion's example (synthetic data).")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory (default: examples/journal next to this script)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"PRNG seed (default: {DEFAULT_SEED})")
    parser.add_argument("--force", action="store_true", help="rewrite the files even if they are up to date")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        written = generate(args.out, args.seed, args.force)
    except (JournalToolMissing, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"generate_journal: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: sample journal {'written' if written else 'up to date'} ({', '.join(HOSTS)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
