#!/usr/bin/env python3
"""Deterministic generator for Bastion's synthetic sample logs.

Writes one day (2026-11-24, UTC) of logs for an imaginary Debian web server
called ``web-01``:

* ``auth.log``   - sshd, sudo, su, CRON and systemd-logind lines (RFC 3164)
* ``syslog``     - systemd units, kernel UFW blocks, cron, dhclient (RFC 3164)
* ``access.log`` - nginx "combined" access log of a small web shop

and the earlier days as logrotate (daily, ``compress`` + ``delaycompress``)
leaves them next to the current file: the newest rotation plain, older ones
gzipped. Each is about half the size of the current day:

* ``auth.log.1`` (2026-11-23), ``auth.log.2.gz`` (11-22), ``auth.log.3.gz`` (11-21)
* ``access.log.1`` (2026-11-23), ``access.log.2.gz`` (11-22)

The same attackers show up on earlier days (``HISTORY``; ``rotated_attackers()``
says who is in which file), so a search across rotations finds them more than
once; nobody gets in before 2026-11-24.

Two more directories hold test material, not part of the demo's story:

* ``newyear/auth.log.1`` (2026-12-31 18:00-23:59) and ``newyear/auth.log``
  (2027-01-01 00:00-05:59): RFC 3164 stamps carry no year, so a reader has to
  infer it across New Year. One 12-hour log split at midnight: a session
  opened on Dec 31 is closed on Jan 1.
* ``broken/truncated.log.gz``: a valid gzip stream (``auth.log.3.gz``) cut in
  half; decompressing it fully must fail with EOFError / zlib.error.
* ``broken/bomb.log.gz``: a gzip bomb, about 1.2 MB that inflates to over
  1 GiB of one repeated access-log line, for tests of decompression limits.
  DEFLATE cannot compress better than about 1032:1, so a smaller file cannot
  hold 1 GiB. Never decompress it without a limit.

Everything here is synthetic: each line is generated from a seeded PRNG and
none of it was recorded on a real system. The attacker addresses are real
public addresses picked so that address-based lookups have something
plausible to work on; the events attributed to them are invented.

Mixed into the normal traffic are the attack traces the demo searches for:
SSH brute force from ``BRUTE_FORCE_IPS``, one successful password login
(``COMPROMISED_LOGIN``) followed by sudo misuse, web scanners from
``SCANNER_IPS``, and a few deliberately hostile lines (an ANSI escape, invalid
UTF-8, a NUL byte, a 10,000-character request) for the output sanitizer; the
hostile lines are only in the current day's files.

The same seed always yields byte-identical files (gzip members carry no name
and mtime 0), so the output is committed and ``tests/test_sample_logs.py``
checks that it stays in sync. Writing the bomb takes a few seconds.

Usage: python examples/generate_logs.py [--out DIR] [--seed N] [--lines N]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import ipaddress
import os
import random
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

DEFAULT_SEED = 20261124
DEFAULT_LINES = 3000  # approximate target per file
DEFAULT_OUT = Path(__file__).resolve().parent / "logs"

START = datetime(2026, 11, 24, tzinfo=UTC)
SPAN = 24 * 3600  # every event falls in [START, START + SPAN)

HOST = "web-01"
SITE = "https://shop.example.com"
SERVER_IP = "10.0.1.23"
GATEWAY_IP = "10.0.1.1"
MONITOR_IP = "10.0.1.5"
ANSIBLE_IP = "10.0.1.6"
CI_RUNNER_IP = "10.0.1.40"

# --- Attack traces (imported by the demo and the tests) ----------------------

BRUTE_FORCE_IPS: tuple[str, ...] = (
    "45.155.205.233",
    "185.220.101.47",
    "193.32.162.157",
    "141.98.11.23",
    "218.92.0.107",
    "2a06:4880:1000::d5",
)
SCANNER_IPS: tuple[str, ...] = ("45.155.205.233", "141.98.11.23", "185.220.101.47")
ATTACKER_IPS: tuple[str, ...] = tuple(dict.fromkeys(BRUTE_FORCE_IPS + SCANNER_IPS))


class CompromisedLogin(NamedTuple):
    user: str
    uid: int
    ip: str
    port: int
    at: datetime


COMPROMISED_LOGIN = CompromisedLogin(
    user="deploy",
    uid=1001,
    ip="193.32.162.157",
    port=52814,
    at=START + timedelta(hours=3, minutes=41, seconds=17),
)
COMPROMISED_FAILURES = 30  # "Failed password for deploy" lines before the success
PRIVESC_COMMAND = "/usr/bin/cat /etc/shadow"
NOT_IN_SUDOERS_USER = "intern"

NIKTO_UA = "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:{:06d})"
SQLMAP_UA = "sqlmap/1.8#stable (https://sqlmap.org)"
MASSCAN_UA = "masscan/1.3 (https://github.com/robertdavidgraham/masscan)"
ZGRAB_UA = "Mozilla/5.0 zgrab/0.x"
SCANNER_USER_AGENTS: tuple[str, ...] = ("Nikto/2.5.0", SQLMAP_UA, MASSCAN_UA, ZGRAB_UA)

# Hostile content for the sanitizer demo; each appears on exactly one line.
ANSI_USERNAME = b"\x1b[31mroot\x1b[0m"
INVALID_UTF8_USER_AGENT = b"Mozilla/5.0 (X11; Linux x86_64) \xff\xfe\xfd"
NUL_REQUEST = b"GET /download.php?file=../../../../etc/passwd\x00.png HTTP/1.1"
LONG_REQUEST_LENGTH = 10_000

# --- Accounts and fixed daemon PIDs ------------------------------------------

UIDS = {"root": 0, "www-data": 33, "alice": 1000, "deploy": 1001, "bob": 1002, "ops": 1003, "intern": 1004}
LOGIND = "systemd-logind[612]"
DHCLIENT = "dhclient[548]"
RSYSLOG_PID = 598
FIRST_SESSION_ID = 1843  # the host has been up for a while
UPTIME_AT_START = 1_187_342.0  # seconds, for kernel timestamps
MAC = "02:1a:4b:7c:2d:11:02:1a:4b:00:00:01:08:00"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Relative activity per hour of day (UTC) for people and for shop visitors.
HUMAN_HOURS = (1, 0, 0, 0, 0, 0, 2, 4, 7, 9, 9, 8, 7, 8, 9, 9, 8, 6, 5, 4, 3, 2, 2, 1)
WEB_HOURS = (3, 2, 1, 1, 1, 2, 3, 5, 7, 8, 9, 9, 10, 9, 9, 9, 9, 10, 11, 12, 11, 9, 6, 4)
FLAT_HOURS = (1,) * 24


# --- Small helpers -------------------------------------------------------------


def stream(seed: int, name: str) -> random.Random:
    """Independent PRNG per concern, so tweaking one file leaves the others alone."""
    return random.Random(f"{seed}:{name}")  # str seeds hash with SHA-512: stable


def wallclock(t: float, origin: datetime = START) -> datetime:
    """Event times are seconds after an origin: START for today's files."""
    return origin + timedelta(seconds=int(t))


def rfc3164(t: float, origin: datetime = START) -> str:
    # Month names are spelled out so the output never depends on the locale.
    d = wallclock(t, origin)
    return f"{_MONTHS[d.month - 1]} {d.day:>2} {d:%H:%M:%S}"


def clf_time(t: float, origin: datetime = START) -> str:
    d = wallclock(t, origin)
    return f"{d.day:02d}/{_MONTHS[d.month - 1]}/{d.year}:{d:%H:%M:%S} +0000"


def to_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def pid_at(rng: random.Random, t: float) -> int:
    # Linux hands out PIDs roughly in time order; a busy box burns ~1 a second.
    return 20_000 + int(t * 0.9) + rng.randrange(40)


def hour_weighted(rng: random.Random, weights: tuple[int, ...]) -> float:
    hour = rng.choices(range(24), weights=weights)[0]
    return hour * 3600 + rng.random() * 3600


def ephemeral_port(rng: random.Random) -> int:
    return rng.randint(32768, 60999)


def fingerprint(user: str, kind: str) -> str:
    # Derived from the name, not the PRNG, so a user's key is stable across seeds.
    digest = hashlib.sha256(f"bastion-demo-key:{user}:{kind}".encode()).digest()
    return f"{kind} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


# Explicit list rather than ipaddress.is_global, whose answer varies by Python version.
_NON_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    )
)


def public_ipv4(rng: random.Random) -> str:
    while True:
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        if not any(ip in net for net in _NON_PUBLIC) and str(ip) not in ATTACKER_IPS:
            return str(ip)


@dataclass
class Log:
    """Collects timestamped lines; sorting on render keeps timestamps monotonic."""

    origin: datetime = START  # wall-clock time of t = 0
    events: list[tuple[float, int, bytes]] = field(default_factory=list)

    def add(self, t: float, line: bytes) -> None:
        self.events.append((t, len(self.events), line))

    def syslog(self, t: float, tag: str, msg: str | bytes) -> None:
        self.add(t, f"{rfc3164(t, self.origin)} {HOST} {tag}: ".encode() + to_bytes(msg))

    def request(
        self, t: float, ip: str, request: str | bytes, status: int, size: int, referer: str, ua: str | bytes
    ) -> None:
        self.add(t, access_line(t, ip, request, status, size, referer, ua, self.origin))

    def render(self, lo: float = float("-inf"), hi: float = float("inf")) -> bytes:
        """The lines of events in [lo, hi), in time order."""
        # The insertion counter breaks ties, so lines of one episode keep their order.
        return b"".join(line + b"\n" for t, _, line in sorted(self.events) if lo <= t < hi)

    def __len__(self) -> int:
        return len(self.events)


# --- Scenario shared by all files ----------------------------------------------


@dataclass(frozen=True)
class Profile:
    """A kind of legitimate SSH session."""

    user: str
    ips: tuple[str, ...]
    key: str
    interactive: bool
    weight: int
    minutes: tuple[float, float]
    hours: tuple[int, ...]
    commands: tuple[str, ...]
    max_sudo: int
    pwd: str


ADMIN_COMMANDS = (
    "/usr/bin/systemctl status nginx",
    "/usr/bin/systemctl reload nginx",
    "/usr/sbin/nginx -t",
    "/usr/bin/journalctl -u nginx --since today",
    "/usr/bin/tail -n 200 /var/log/nginx/error.log",
    "/usr/sbin/ufw status verbose",
    "/usr/bin/apt update",
    "/usr/bin/apt list --upgradable",
    "/usr/bin/less /var/log/auth.log",
    "/usr/bin/du -sh /var/log",
)
ANSIBLE_MODULES = ("setup", "stat", "apt", "copy", "file", "systemd", "lineinfile")
PHP_RELOAD = "/usr/bin/systemctl reload php8.2-fpm.service"

PROFILES = (
    Profile("alice", ("10.8.0.14",), "ED25519", True, 4, (5, 90), HUMAN_HOURS, ADMIN_COMMANDS, 4, "/home/alice"),
    Profile("bob", ("10.8.0.22", "10.8.0.37"), "ED25519", True, 4, (3, 60), HUMAN_HOURS, (), 0, "/home/bob"),
    Profile("ops", ("10.8.0.31",), "ED25519", True, 2, (2, 45), HUMAN_HOURS, ADMIN_COMMANDS, 3, "/home/ops"),
    Profile("ops", (ANSIBLE_IP,), "RSA", False, 3, (0.3, 1.5), FLAT_HOURS, ("ansible",), 6, "/home/ops"),
    Profile("deploy", (CI_RUNNER_IP,), "ED25519", False, 2, (0.2, 1.0), HUMAN_HOURS, (PHP_RELOAD,), 1, "/var/www/shop"),
)


@dataclass
class Sudo:
    t: float
    command: str
    duration: float


@dataclass
class Session:
    user: str
    ip: str
    port: int
    start: float
    end: float
    interactive: bool
    key: str = ""
    pwd: str = ""
    commands: list[Sudo] = field(default_factory=list)
    sid: int = 0  # systemd-logind session id, assigned in time order
    pid: int = 0
    pts: int = 0

    @property
    def tty(self) -> str:
        return f"pts/{self.pts}" if self.interactive else "unknown"


@dataclass(frozen=True)
class CronRun:
    t: float
    pid: int
    user: str
    command: str
    duration: float


@dataclass
class Scenario:
    seed: int
    sessions: list[Session]
    cron: list[CronRun]
    intruder: Session


CRON_JOBS = (  # (minutes past midnight that match, user, command, duration range)
    (range(0, 1440, 5), "www-data", "php /var/www/shop/artisan schedule:run >> /dev/null 2>&1", (0.8, 3.0)),
    (range(17, 1440, 60), "root", "cd / && run-parts --report /etc/cron.hourly", (0.05, 0.3)),
    ((150,), "root", "/usr/local/sbin/db-backup.sh", (40.0, 90.0)),
    ((385,), "root", "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }", (20.0, 60.0)),
)


def plan_cron(rng: random.Random) -> list[CronRun]:
    runs = []
    for minutes, user, command, (lo, hi) in CRON_JOBS:
        for minute in minutes:
            t = minute * 60 + rng.uniform(0.0, 0.9)  # cron fires just after :00
            runs.append(CronRun(t, pid_at(rng, t), user, command, rng.uniform(lo, hi)))
    return sorted(runs, key=lambda r: r.t)


def ansible_command(rng: random.Random, t: float, origin: datetime = START) -> str:
    token = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=32))
    stamp = f"{origin.timestamp() + t:.2f}"
    tmp = f"ansible-tmp-{stamp}-{rng.randint(20000, 99999)}-{rng.randint(10**13, 10**14)}"
    module = rng.choice(ANSIBLE_MODULES)
    return (
        f"/bin/sh -c echo BECOME-SUCCESS-{token} ; /usr/bin/python3 /home/ops/.ansible/tmp/{tmp}/AnsiballZ_{module}.py"
    )


def draw_commands(rng: random.Random, p: Profile, start: float, end: float, origin: datetime = START) -> list[Sudo]:
    if not p.commands:
        return []
    low = 1 if not p.interactive else 0  # automation always escalates
    times = sorted(rng.uniform(start + 2, end - 3) for _ in range(rng.randint(low, p.max_sudo)))
    commands = []
    for t in times:
        text = ansible_command(rng, t, origin) if p.commands == ("ansible",) else rng.choice(p.commands)
        commands.append(Sudo(t, text, rng.uniform(0.05, 1.5)))
    return commands


def draw_session(rng: random.Random, origin: datetime = START) -> Session:
    p = rng.choices(PROFILES, weights=[x.weight for x in PROFILES])[0]
    start = min(hour_weighted(rng, p.hours), SPAN - 600)
    end = min(start + rng.uniform(*p.minutes) * 60, SPAN - 2)
    return Session(
        user=p.user,
        ip=rng.choice(p.ips),
        port=ephemeral_port(rng),
        start=start,
        end=end,
        interactive=p.interactive,
        key=fingerprint(p.user, p.key),
        pwd=p.pwd,
        commands=draw_commands(rng, p, start, end, origin),
    )


def session_lines(s: Session) -> int:
    return 3 + 3 * len(s.commands) + 5  # open, sudo triples, close (see add_session)


def plan_sessions(rng: random.Random, budget: int, origin: datetime = START) -> list[Session]:
    sessions: list[Session] = []
    used = 0
    while used < budget:
        s = draw_session(rng, origin)
        sessions.append(s)
        used += session_lines(s)
    return sessions


def intruder_session() -> Session:
    c = COMPROMISED_LOGIN
    start = (c.at - START).total_seconds()
    return Session(
        user=c.user, ip=c.ip, port=c.port, start=start, end=start + 42 * 60 + 23, interactive=True, pwd="/home/deploy"
    )


def assign_ids(rng: random.Random, sessions: list[Session], first_id: int = FIRST_SESSION_ID) -> None:
    """Give session ids, PIDs and terminals in start order, as the host would."""
    busy: dict[int, float] = {}  # pts number -> end of the session holding it
    for sid, s in enumerate(sorted(sessions, key=lambda x: x.start), first_id):
        s.sid = sid
        s.pid = pid_at(rng, s.start)
        if s.interactive:
            # pts/0 belongs to a tmux session opened before this log window.
            pts = 1
            while busy.get(pts, -1.0) > s.start:
                pts += 1
            s.pts = pts
            busy[pts] = s.end


def build_scenario(seed: int, lines: int) -> Scenario:
    cron = plan_cron(stream(seed, "cron"))
    intruder = intruder_session()
    probe = Log()
    add_attacks(probe, seed, intruder)  # count only; ids do not change the count
    budget = lines - 2 * len(cron) - len(probe)
    sessions = plan_sessions(stream(seed, "sessions"), budget)
    assign_ids(stream(seed, "pids"), sessions + [intruder])
    return Scenario(seed, sessions, cron, intruder)


# --- auth.log --------------------------------------------------------------------


def add_sudo(log: Log, t: float, user: str, tty: str, pwd: str, command: str, duration: float) -> None:
    # sudo right-aligns the user name in eight columns.
    log.syslog(t, "sudo", f"{user:>8} : TTY={tty} ; PWD={pwd} ; USER=root ; COMMAND={command}")
    log.syslog(t, "sudo", f"pam_unix(sudo:session): session opened for user root(uid=0) by {user}(uid={UIDS[user]})")
    log.syslog(t + duration, "sudo", "pam_unix(sudo:session): session closed for user root")


def open_session(log: Log, s: Session, method: str) -> None:
    tag = f"sshd[{s.pid}]"
    detail = f": {s.key}" if s.key else ""
    log.syslog(s.start, tag, f"Accepted {method} for {s.user} from {s.ip} port {s.port} ssh2{detail}")
    log.syslog(s.start, tag, f"pam_unix(sshd:session): session opened for user {s.user}(uid={UIDS[s.user]}) by (uid=0)")
    log.syslog(s.start + 0.05, LOGIND, f"New session {s.sid} of user {s.user}.")


def close_session(log: Log, s: Session) -> None:
    child = f"sshd[{s.pid + 2}]"  # the privilege-separated child reports the disconnect
    log.syslog(s.end, child, f"Received disconnect from {s.ip} port {s.port}:11: disconnected by user")
    log.syslog(s.end, child, f"Disconnected from user {s.user} {s.ip} port {s.port}")
    log.syslog(s.end, f"sshd[{s.pid}]", f"pam_unix(sshd:session): session closed for user {s.user}")
    log.syslog(s.end + 0.01, LOGIND, f"Session {s.sid} logged out. Waiting for processes to exit.")
    log.syslog(s.end + 0.02, LOGIND, f"Removed session {s.sid}.")


def add_session(log: Log, s: Session) -> None:
    open_session(log, s, "publickey")
    for cmd in s.commands:
        add_sudo(log, cmd.t, s.user, s.tty, s.pwd, cmd.command, cmd.duration)
    close_session(log, s)


def add_cron_sessions(log: Log, runs: list[CronRun]) -> None:
    for r in runs:
        tag = f"CRON[{r.pid}]"
        log.syslog(r.t, tag, f"pam_unix(cron:session): session opened for user {r.user}(uid={UIDS[r.user]}) by (uid=0)")
        log.syslog(r.t + r.duration, tag, f"pam_unix(cron:session): session closed for user {r.user}")


INVALID_USERS = (
    "admin",
    "test",
    "user",
    "oracle",
    "ubuntu",
    "postgres",
    "git",
    "ftpuser",
    "guest",
    "pi",
    "support",
    "hadoop",
    "debian",
    "jenkins",
    "mysql",
    "teamspeak",
    "minecraft",
    "dev",
    "administrator",
    "centos",
)


def pam_fields(ip: str, user: str = "") -> str:
    # pam_unix puts two spaces before user=, and omits it for unknown users.
    tail = f"  user={user}" if user else ""
    return f"logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}{tail}"


def more_failures(log: Log, t: float, tag: str, ip: str, user: str, tries: int) -> None:
    if tries > 1:
        log.syslog(t, tag, f"PAM {tries - 1} more authentication failures; {pam_fields(ip, user)}")


def too_many(log: Log, t: float, tag: str, ip: str, port: int, user: str, invalid: bool) -> None:
    # After MaxAuthTries (6) sshd drops the connection and PAM reports the rest.
    who = f"invalid user {user}" if invalid else user
    label = "invalid user" if invalid else "authenticating user"
    log.syslog(
        t, tag, f"error: maximum authentication attempts exceeded for {who} from {ip} port {port} ssh2 [preauth]"
    )
    log.syslog(t, tag, f"Disconnecting {label} {user} {ip} port {port}: Too many authentication failures [preauth]")
    more_failures(log, t, tag, ip, "" if invalid else user, 6)
    log.syslog(t, tag, "PAM service(sshd) ignoring max retries; 6 > 3")


def polite_close(log: Log, rng: random.Random, t: float, tag: str, ip: str, port: int, label: str, user: str) -> None:
    if rng.random() < 0.5:
        log.syslog(t, tag, f"Connection closed by {label} {user} {ip} port {port} [preauth]")
    else:
        log.syslog(t, tag, f"Received disconnect from {ip} port {port}:11: Bye Bye [preauth]")
        log.syslog(t, tag, f"Disconnected from {label} {user} {ip} port {port} [preauth]")


def try_invalid_user(log: Log, rng: random.Random, t: float, ip: str, user: str, tries: int) -> None:
    tag, port = f"sshd[{pid_at(rng, t)}]", rng.randint(1024, 65535)
    log.syslog(t, tag, f"Invalid user {user} from {ip} port {port}")
    t += rng.uniform(1.0, 2.5)
    log.syslog(t, tag, "pam_unix(sshd:auth): check pass; user unknown")
    log.syslog(t, tag, f"pam_unix(sshd:auth): authentication failure; {pam_fields(ip)}")
    for _ in range(tries):
        t += rng.uniform(1.5, 3.5)
        log.syslog(t, tag, f"Failed password for invalid user {user} from {ip} port {port} ssh2")
    t += rng.uniform(0.2, 1.0)
    if tries >= 6:
        too_many(log, t, tag, ip, port, user, invalid=True)
        return
    polite_close(log, rng, t, tag, ip, port, "invalid user", user)
    more_failures(log, t, tag, ip, "", tries)


def try_known_user(
    log: Log, rng: random.Random, t: float, ip: str, user: str, tries: int, port: int | None = None
) -> None:
    tag, port = f"sshd[{pid_at(rng, t)}]", port or rng.randint(1024, 65535)
    t += rng.uniform(1.0, 2.5)
    log.syslog(t, tag, f"pam_unix(sshd:auth): authentication failure; {pam_fields(ip, user)}")
    for _ in range(tries):
        t += rng.uniform(1.5, 3.5)
        log.syslog(t, tag, f"Failed password for {user} from {ip} port {port} ssh2")
    t += rng.uniform(0.2, 1.0)
    if tries >= 6:
        too_many(log, t, tag, ip, port, user, invalid=False)
        return
    polite_close(log, rng, t, tag, ip, port, "authenticating user", user)
    more_failures(log, t, tag, ip, user, tries)


def probe_without_login(log: Log, rng: random.Random, t: float, ip: str) -> None:
    tag, port = f"sshd[{pid_at(rng, t)}]", rng.randint(1024, 65535)
    kind = rng.randrange(3)
    if kind == 0:
        log.syslog(
            t,
            tag,
            f"Unable to negotiate with {ip} port {port}: no matching key exchange "
            "method found. Their offer: diffie-hellman-group14-sha1,"
            "diffie-hellman-group-exchange-sha1,"
            "diffie-hellman-group1-sha1 [preauth]",
        )
    elif kind == 1:
        log.syslog(t, tag, f"banner exchange: Connection from {ip} port {port}: invalid format")
    else:
        log.syslog(t, tag, f"Connection reset by {ip} port {port} [preauth]")


def campaign_weak_kex(log: Log, rng: random.Random) -> None:
    ip, t = "141.98.11.23", 47 * 60.0
    for i in range(27):
        if i % 3 == 2:
            try_invalid_user(log, rng, t, ip, rng.choice(INVALID_USERS), 1)
        else:
            probe_without_login(log, rng, t, ip)
        t += rng.uniform(40, 120)


def campaign_dictionary(log: Log, rng: random.Random) -> None:
    ip, t = "45.155.205.233", 72 * 60.0
    for i in range(45):
        if i == 20:  # the hostile user name; sshd logs it once, verbatim
            tag, port = f"sshd[{pid_at(rng, t)}]", rng.randint(1024, 65535)
            suffix = f" from {ip} port {port}".encode()
            log.syslog(t, tag, b"Invalid user " + ANSI_USERNAME + suffix)
            log.syslog(t + 0.4, tag, f"Connection closed by {ip} port {port} [preauth]")
        else:
            tries = 6 if i == 3 else rng.randint(1, 3)
            try_invalid_user(log, rng, t, ip, INVALID_USERS[i % len(INVALID_USERS)], tries)
        t += rng.uniform(20, 80)


def campaign_compromise(log: Log, rng: random.Random) -> None:
    ip, t = COMPROMISED_LOGIN.ip, 125 * 60.0
    for _ in range(15):  # first a generic dictionary run
        try_invalid_user(log, rng, t, ip, rng.choice(INVALID_USERS), rng.randint(1, 2))
        t += rng.uniform(30, 90)
    # Then a targeted run against deploy: 10 connections x 3 passwords, ending
    # shortly before the successful login.
    success = (COMPROMISED_LOGIN.at - START).total_seconds()
    starts = [success - 25.0]
    for _ in range(COMPROMISED_FAILURES // 3 - 1):
        starts.append(starts[-1] - rng.uniform(90, 150))
    for t in reversed(starts):
        try_known_user(log, rng, t, ip, COMPROMISED_LOGIN.user, 3)


def campaign_root_maxauth(log: Log, rng: random.Random) -> None:
    ip, t = "185.220.101.47", 5 * 3600 + 10 * 60.0
    for i in range(12):
        try_known_user(log, rng, t, ip, "root", 2 if i % 4 == 3 else 6)
        t += rng.uniform(60, 180)


def campaign_low_and_slow(log: Log, rng: random.Random) -> None:
    ip, t = "218.92.0.107", 6 * 3600.0
    while t < 22 * 3600:
        if rng.random() < 0.85:
            try_known_user(log, rng, t, ip, "root", 3)
        else:
            try_invalid_user(log, rng, t, ip, "admin", 3)
        t += rng.uniform(15 * 60, 30 * 60)


def campaign_ipv6(log: Log, rng: random.Random) -> None:
    ip, t = "2a06:4880:1000::d5", 9 * 3600 + 30 * 60.0
    for _ in range(20):
        try_invalid_user(log, rng, t, ip, rng.choice(INVALID_USERS), 1)
        t += rng.uniform(60, 140)


def add_intrusion(log: Log, s: Session) -> None:
    """The compromised deploy session: recon, reading shadow, failed pivot."""
    open_session(log, s, "password")
    t, tty = s.start, s.tty
    log.syslog(t + 48, "sudo", f"{s.user:>8} : TTY={tty} ; PWD={s.pwd} ; USER=root ; COMMAND=list")
    add_sudo(log, t + 74, s.user, tty, s.pwd, PRIVESC_COMMAND, 0.1)
    # Later, with a password cracked from /etc/shadow, the attacker tries another account.
    other, su_pid = NOT_IN_SUDOERS_USER, s.pid + 731
    home = f"/home/{other}"
    t = s.start + 37 * 60 + 23
    log.syslog(t, f"su[{su_pid}]", f"(to {other}) {s.user} on {tty}")
    log.syslog(
        t,
        f"su[{su_pid}]",
        f"pam_unix(su-l:session): session opened for user {other}(uid={UIDS[other]}) by {s.user}(uid={UIDS[s.user]})",
    )
    log.syslog(
        t + 51,
        "sudo",
        f"pam_unix(sudo:auth): authentication failure; logname={s.user} "
        f"uid={UIDS[other]} euid=0 tty=/dev/{tty} ruser={other} "
        f"rhost=  user={other}",
    )
    log.syslog(
        t + 64,
        "sudo",
        f"{other:>8} : 3 incorrect password attempts ; TTY={tty} ; PWD={home} ; USER=root ; COMMAND=/bin/bash",
    )
    log.syslog(
        t + 89, "sudo", f"{other:>8} : user NOT in sudoers ; TTY={tty} ; PWD={home} ; USER=root ; COMMAND=/bin/bash"
    )
    log.syslog(t + 142, f"su[{su_pid}]", f"pam_unix(su-l:session): session closed for user {other}")
    close_session(log, s)


def add_attacks(log: Log, seed: int, intruder: Session) -> None:
    rng = stream(seed, "attacks")  # fresh each call, so counting runs are identical
    for campaign in (
        campaign_weak_kex,
        campaign_dictionary,
        campaign_compromise,
        campaign_root_maxauth,
        campaign_low_and_slow,
        campaign_ipv6,
    ):
        campaign(log, rng)
    add_intrusion(log, intruder)


def build_auth(scn: Scenario) -> bytes:
    log = Log()
    add_cron_sessions(log, scn.cron)
    for s in scn.sessions:
        add_session(log, s)
    add_attacks(log, scn.seed, scn.intruder)
    return log.render()


# --- syslog ------------------------------------------------------------------------


def oneshot(log: Log, t: float, unit: str, desc: str, seconds: float, cpu: float | None = None) -> None:
    """A systemd timer-driven oneshot unit: start, finish, optional CPU summary."""
    log.syslog(t, "systemd[1]", f"Starting {unit} - {desc}...")
    log.syslog(t + seconds, "systemd[1]", f"{unit}: Deactivated successfully.")
    log.syslog(t + seconds, "systemd[1]", f"Finished {unit} - {desc}.")
    if cpu is not None:
        log.syslog(t + seconds, "systemd[1]", f"{unit}: Consumed {cpu:.3f}s CPU time.")


def add_timers(log: Log, rng: random.Random) -> None:
    for minute in range(0, 1440, 10):
        oneshot(
            log,
            minute * 60 + rng.uniform(0, 0.5),
            "sysstat-collect.service",
            "system activity accounting tool",
            rng.uniform(0.02, 0.2),
        )
    for minute in range(9, 1440, 30):
        oneshot(
            log,
            minute * 60 + rng.uniform(0, 0.5),
            "phpsessionclean.service",
            "Clean php session files",
            rng.uniform(0.3, 1.2),
        )
    oneshot(log, 0.1, "dpkg-db-backup.service", "Daily dpkg database backup service", 0.4)
    oneshot(log, 0.2, "logrotate.service", "Rotate log files", 1.1, 0.412)
    log.syslog(
        0.9,
        f"rsyslogd[{RSYSLOG_PID}]",
        '[origin software="rsyslogd" swVersion="8.2302.0" '
        f'x-pid="{RSYSLOG_PID}" x-info="https://www.rsyslog.com"] rsyslogd was HUPed',
    )
    oneshot(log, 7 * 60 + 3.2, "sysstat-summary.service", "Generate a daily summary of process accounting", 0.3)
    oneshot(
        log,
        rng.uniform(600, 43000),
        "man-db.service",
        "Daily man-db regeneration",
        rng.uniform(2, 9),
        rng.uniform(1, 4),
    )
    oneshot(
        log,
        6 * 3600 + rng.uniform(0, 3600),
        "apt-daily-upgrade.service",
        "Daily apt upgrade and clean activities",
        rng.uniform(5, 30),
        rng.uniform(3, 12),
    )
    for base in (6 * 3600, 18 * 3600):
        oneshot(
            log,
            base + rng.uniform(0, 4 * 3600),
            "apt-daily.service",
            "Daily apt download activities",
            rng.uniform(3, 15),
        )
        oneshot(log, base + rng.uniform(0, 4 * 3600), "certbot.service", "Certbot", rng.uniform(1, 4))
    oneshot(
        log, 15 * 3600 + rng.uniform(0, 600), "systemd-tmpfiles-clean.service", "Cleanup of Temporary Directories", 0.1
    )


def add_dhcp(log: Log, rng: random.Random) -> None:
    # Each renewal schedules the next one, as dhclient does.
    t = rng.uniform(60, 1800)
    while t < SPAN - 5:
        renew = rng.randint(1500, 1800)
        log.syslog(t, DHCLIENT, f"DHCPREQUEST for {SERVER_IP} on eth0 to {GATEWAY_IP} port 67")
        log.syslog(t + 0.01, DHCLIENT, f"DHCPACK of {SERVER_IP} from {GATEWAY_IP}")
        log.syslog(t + 0.03, DHCLIENT, f"bound to {SERVER_IP} -- renewal in {renew} seconds.")
        t += renew


def add_cron_commands(log: Log, runs: list[CronRun]) -> None:
    for r in runs:
        log.syslog(r.t, f"CRON[{r.pid}]", f"({r.user}) CMD ({r.command})")


RELOADS = {
    "/usr/bin/systemctl reload nginx": ("nginx.service", "A high performance web server and a reverse proxy server"),
    PHP_RELOAD: ("php8.2-fpm.service", "The PHP 8.2 FastCGI Process Manager"),
}


def add_session_units(log: Log, sessions: list[Session]) -> None:
    # logind sessions become scope units; reloads done via sudo show up here too.
    for s in sessions:
        scope = f"session-{s.sid}.scope"
        log.syslog(s.start + 0.06, "systemd[1]", f"Started {scope} - Session {s.sid} of User {s.user}.")
        log.syslog(s.end + 0.03, "systemd[1]", f"{scope}: Deactivated successfully.")
        for cmd in s.commands:
            if cmd.command in RELOADS:
                unit, desc = RELOADS[cmd.command]
                log.syslog(cmd.t + 0.02, "systemd[1]", f"Reloading {unit} - {desc}...")
                log.syslog(cmd.t + 0.04, "systemd[1]", f"Reloaded {unit} - {desc}.")


BLOCKED_TCP = (
    23,
    445,
    3389,
    8080,
    8443,
    5900,
    1433,
    3306,
    6379,
    2375,
    9200,
    8888,
    81,
    8000,
    2323,
    5555,
    7547,
    37215,
    52869,
    2222,
    5432,
    27017,
    11211,
    9090,
)
BLOCKED_UDP = (161, 123, 1900, 5060, 11211, 389, 53413)


def ufw_block(rng: random.Random, t: float, src: str, masscan: bool = False) -> str:
    stamp = f"[{UPTIME_AT_START + t:12.6f}]"
    head = f"{stamp} [UFW BLOCK] IN=eth0 OUT= MAC={MAC} SRC={src} DST={SERVER_IP}"
    ttl = rng.choice((47, 49, 52, 54, 113, 117, 240, 243, 245, 249))
    if not masscan and rng.random() < 0.15:
        length = rng.randint(40, 120)
        return (
            f"{head} LEN={length} TOS=0x00 PREC=0x00 TTL={ttl} ID={rng.randrange(65536)} "
            f"PROTO=UDP SPT={rng.randint(1024, 65535)} DPT={rng.choice(BLOCKED_UDP)} "
            f"LEN={length - 20}"
        )
    ip_id = 54321 if masscan else rng.randrange(65536)  # masscan's fixed IP ID
    window = 1024 if masscan else rng.choice((1024, 14600, 29200, 65535))
    return (
        f"{head} LEN=40 TOS=0x00 PREC=0x00 TTL={ttl} ID={ip_id} PROTO=TCP "
        f"SPT={rng.randint(1024, 65535)} DPT={rng.choice(BLOCKED_TCP)} "
        f"WINDOW={window} RES=0x00 SYN URGP=0"
    )


def add_attacker_blocks(log: Log, rng: random.Random) -> None:
    bursts = (
        ("141.98.11.23", 45 * 60, 6, False),
        ("45.155.205.233", 70 * 60, 8, False),
        ("218.92.0.107", 5 * 3600 + 50 * 60, 5, False),
        ("185.220.101.47", 7 * 3600 + 3 * 60, 26, True),
    )
    for ip, start, count, masscan in bursts:
        t = float(start)
        for _ in range(count):
            log.syslog(t, "kernel", ufw_block(rng, t, ip, masscan))
            t += rng.uniform(0.5, 4.0) if masscan else rng.uniform(5, 40)


def add_ufw_noise(log: Log, rng: random.Random, target: int) -> None:
    # Internet background radiation; a few sources are much busier than the rest.
    pool = [public_ipv4(rng) for _ in range(150)]
    weights = [1.0 / (i + 1) for i in range(len(pool))]
    while len(log) < target:
        t = rng.uniform(0, SPAN - 1)
        log.syslog(t, "kernel", ufw_block(rng, t, rng.choices(pool, weights)[0]))


def build_syslog(scn: Scenario, lines: int) -> bytes:
    log = Log()
    rng = stream(scn.seed, "syslog")
    add_timers(log, rng)
    add_dhcp(log, rng)
    add_cron_commands(log, scn.cron)
    add_session_units(log, scn.sessions + [scn.intruder])
    add_attacker_blocks(log, rng)
    add_ufw_noise(log, rng, lines)
    return log.render()


# --- access.log ---------------------------------------------------------------------

BROWSERS = (  # (user agent, weight, is Apple mobile)
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/142.0.0.0 Safari/537.36",
        30,
        False,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/142.0.0.0 Safari/537.36",
        12,
        False,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/26.1 Mobile/15E148 Safari/604.1",
        20,
        True,
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/142.0.0.0 Mobile Safari/537.36",
        18,
        False,
    ),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:145.0) Gecko/20100101 Firefox/145.0", 7, False),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:145.0) Gecko/20100101 Firefox/145.0", 3, False),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/142.0.0.0 Safari/537.36 Edg/142.0.0.0",
        6,
        False,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/26.1 Safari/605.1.15",
        4,
        False,
    ),
)
BOTS = (  # (address prefix, user agent)
    ("66.249.66.", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
    ("40.77.167.", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"),
    ("54.36.148.", "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"),
)
PRODUCTS = (
    "merino-wool-beanie",
    "canvas-tote-bag",
    "ceramic-pour-over-set",
    "walnut-desk-organizer",
    "linen-apron",
    "enamel-camp-mug",
    "leather-card-wallet",
    "bamboo-cutting-board",
    "wool-throw-blanket",
)
POSTS = ("how-we-source-wool", "caring-for-cast-iron", "gift-guide-2026", "behind-the-workshop")
ASSETS = (
    ("/static/css/app.4f2c9e1b.css", 48213),
    ("/static/js/vendor.5be08f14.js", 201877),
    ("/static/js/app.91d3a7c2.js", 63420),
    ("/static/img/logo.svg", 3311),
    ("/static/fonts/inter-var.woff2", 71032),
)
EXTERNAL_REFERERS = (
    "-",
    "-",
    "-",
    "https://www.google.com/",
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://www.bing.com/",
    "https://www.instagram.com/",
    "https://www.ecosia.org/",
)
APP_404, NGINX_404, NGINX_403, NGINX_400 = 5213, 153, 153, 157


class Visitor(NamedTuple):
    ip: str
    ua: str
    apple_mobile: bool


def access_line(
    t: float,
    ip: str,
    request: str | bytes,
    status: int,
    size: int,
    referer: str,
    ua: str | bytes,
    origin: datetime = START,
) -> bytes:
    return (
        f'{ip} - - [{clf_time(t, origin)}] "'.encode()
        + to_bytes(request)
        + f'" {status} {size} "{referer}" "'.encode()
        + to_bytes(ua)
        + b'"'
    )


def pick_page(rng: random.Random) -> tuple[str, int, int]:
    """Return (path, status, size) for a page view."""
    kind = rng.choices(
        ("home", "list", "product", "blog", "post", "about", "cart", "search", "account"),
        weights=(30, 15, 30, 4, 7, 3, 5, 4, 2),
    )[0]
    if kind == "product":
        if rng.random() < 0.02:  # old links to discontinued items
            return "/products/discontinued-felt-slippers", 404, APP_404
        return f"/products/{rng.choice(PRODUCTS)}", 200, rng.randint(21000, 26000)
    if kind == "post":
        return f"/blog/{rng.choice(POSTS)}", 200, rng.randint(14000, 19000)
    if kind == "search":
        term = rng.choice(("wool", "mug", "gift", "apron", "wallet", "board"))
        return f"/search?q={term}", 200, rng.randint(9000, 23000)
    if kind == "account":
        return "/account", 302, 374
    fixed = {
        "home": ("/", 18234),
        "list": ("/products", 24511),
        "blog": ("/blog", 15322),
        "about": ("/about", 9120),
        "cart": ("/cart", 6410),
    }
    path, size = fixed[kind]
    return path, 200, size + rng.randint(-40, 40)


def page_extras(rng: random.Random, path: str) -> list[tuple[str, str, int, int]]:
    """XHR and media requests a page triggers: (method, path, status, size)."""
    if path.startswith("/products/") and "discontinued" not in path:
        slug = path.rsplit("/", 1)[1]
        extras = [
            ("GET", f"/media/products/{slug}-640.webp", 200, rng.randint(38000, 91000)),
            ("GET", f"/api/v1/products/{slug}/stock", 200, rng.randint(70, 95)),
        ]
        if rng.random() < 0.15:
            extras.append(("POST", "/api/v1/cart/items", 201, rng.randint(130, 160)))
        return extras
    if path == "/":
        return [("GET", "/api/v1/products?featured=1", 200, rng.randint(2400, 2900))]
    if path == "/cart":
        return [("GET", "/api/v1/cart", 200, rng.randint(300, 900))]
    return []


def add_assets(log: Log, rng: random.Random, t: float, v: Visitor, page_url: str, cached: bool) -> None:
    for path, size in ASSETS:
        t += rng.uniform(0.03, 0.25)
        status, body = (304, 0) if cached else (200, size)
        log.request(t, v.ip, f"GET {path} HTTP/2.0", status, body, page_url, v.ua)
    icon, status, size = ("/apple-touch-icon.png", 404, NGINX_404) if v.apple_mobile else ("/favicon.ico", 200, 4286)
    log.request(t + 0.3, v.ip, f"GET {icon} HTTP/2.0", status, size, "-", v.ua)


def add_visit(log: Log, rng: random.Random, visitors: list[Visitor]) -> None:
    v = rng.choice(visitors)
    t = hour_weighted(rng, WEB_HOURS)
    referer = rng.choice(EXTERNAL_REFERERS)
    returning = rng.random() < 0.3
    for n in range(rng.choices((1, 2, 3, 4, 5, 6), weights=(35, 25, 15, 10, 8, 7))[0]):
        if t >= SPAN - 5:
            break
        path, status, size = pick_page(rng)
        log.request(t, v.ip, f"GET {path} HTTP/2.0", status, size, referer, v.ua)
        url = f"{SITE}{path}"
        if n == 0:
            add_assets(log, rng, t, v, url, returning)
        for method, extra, st, sz in page_extras(rng, path):
            te = t + rng.uniform(0.4, 1.6)
            log.request(te, v.ip, f"{method} {extra} HTTP/2.0", st, sz, url, v.ua)
        referer = url
        t += rng.uniform(8, 140)


def add_bot_visit(log: Log, rng: random.Random) -> None:
    prefix, ua = rng.choice(BOTS)
    ip = f"{prefix}{rng.randint(2, 220)}"
    t = rng.uniform(0, SPAN - 2000)
    log.request(t, ip, "GET /robots.txt HTTP/1.1", 200, 67, "-", ua)
    if "Googlebot" in ua and rng.random() < 0.5:
        t += rng.uniform(1, 5)
        log.request(t, ip, "GET /sitemap.xml HTTP/1.1", 200, 3921, "-", ua)
    for _ in range(rng.randint(2, 6)):
        t += rng.uniform(20, 300)
        path, status, size = pick_page(rng)
        log.request(t, ip, f"GET {path} HTTP/1.1", status, size, "-", ua)


def add_health_checks(log: Log, rng: random.Random) -> None:
    for t in range(17, SPAN, 300):
        tt = t + rng.uniform(0, 0.2)
        log.request(tt, MONITOR_IP, "GET /healthz HTTP/1.1", 200, 2, "-", "Blackbox Exporter/0.25.0")


NIKTO_PATHS = (
    "/",
    "/robots.txt",
    "/wp-login.php",
    "/wp-admin/",
    "/xmlrpc.php",
    "/.env",
    "/.git/config",
    "/.git/HEAD",
    "/.htaccess",
    "/.DS_Store",
    "/.aws/credentials",
    "/phpmyadmin/",
    "/pma/",
    "/admin/",
    "/server-status",
    "/config.php.bak",
    "/backup.zip",
    "/db.sql",
    "/cgi-bin/test.cgi",
    "/cgi-bin/../../../../etc/passwd",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/_ignition/execute-solution",
    "/telescope/requests",
    "/storage/logs/laravel.log",
    "/actuator/env",
    "/solr/admin/",
    "/console/",
    "/manager/html",
    "/.svn/entries",
    "/info.php",
    "/phpinfo.php",
    "/shell.php",
    "/adminer.php",
    "/wp-content/debug.log",
    "/api/v1/../../../../etc/hosts",
    "/index.php?page=../../../../etc/passwd",
)
SQLI_PAYLOADS = (
    "1",
    "1%27%20OR%201=1--",
    "1%20AND%201=1",
    "1%20AND%201=2",
    "1%27%20AND%20%271%27=%271",
    "1%27%20AND%20SLEEP(5)--%20-",
    "1%20UNION%20ALL%20SELECT%20NULL--%20-",
    "1%20UNION%20ALL%20SELECT%20NULL,NULL--%20-",
    "1%20UNION%20ALL%20SELECT%20NULL,NULL,NULL--%20-",
    "1%29%20AND%20%28SELECT%201%20FROM%20pg_sleep%285%29%29--",
    "1%27%3B%20WAITFOR%20DELAY%20%270:0:5%27--",
    "-1%27%20OR%20%27x%27=%27x",
    "1%22%20OR%20%22a%22=%22a",
    "1%20ORDER%20BY%201--",
    "1%20ORDER%20BY%2010--",
    "1%27%20AND%20EXTRACTVALUE(1,CONCAT(0x5c,VERSION()))--%20-",
)


def scan_status(path: str) -> tuple[int, int]:
    """How this nginx + Laravel site answers a scanner's GET of path."""
    base = path.split("?")[0]
    if ".." in base:
        return 400, NGINX_400  # nginx refuses to resolve above the root
    if "/." in base:
        return 403, NGINX_403  # dotfiles are denied
    if base in ("/", "/index.php"):
        return 200, 18234
    if base == "/robots.txt":
        return 200, 67
    if base.endswith(".php"):
        return 404, NGINX_404  # only index.php is handed to PHP
    return 404, APP_404


def scan_nikto(log: Log, rng: random.Random) -> None:
    ip, t = "45.155.205.233", 2 * 3600 + 31 * 60 + 12.0
    for n, path in enumerate(NIKTO_PATHS, start=1):
        status, size = scan_status(path)
        ua = NIKTO_UA.format(n * 3 + rng.randrange(3))
        log.request(t, ip, f"GET {path} HTTP/1.1", status, size, "-", ua)
        if n == 19:  # null-byte path truncation probe
            t += rng.uniform(0.2, 1.5)
            log.request(t, ip, NUL_REQUEST, 404, NGINX_404, "-", ua)
        t += rng.uniform(0.2, 1.5)


def scan_sqlmap(log: Log, rng: random.Random) -> None:
    ip, t = "141.98.11.23", 4 * 3600 + 11 * 60 + 40.0
    log.request(t, ip, "GET / HTTP/1.1", 200, 18234, "-", INVALID_UTF8_USER_AGENT)
    t += 25
    for payload in SQLI_PAYLOADS:
        # Two payloads make the app throw: the kind of lead an analyst wants.
        status, size = (
            (500, 6612) if "SLEEP" in payload or "EXTRACTVALUE" in payload else (200, 18234 + rng.randint(-40, 40))
        )
        log.request(t, ip, f"GET /index.php?id={payload} HTTP/1.1", status, size, "-", SQLMAP_UA)
        t += 5.2 if "SLEEP" in payload or "pg_sleep" in payload else rng.uniform(0.3, 1.2)


def scan_zgrab(log: Log, rng: random.Random) -> None:
    ip = "185.220.101.47"
    t = 7 * 3600 + 4 * 60 + 10.0
    log.request(t, ip, "GET / HTTP/1.0", 200, 18234, "-", MASSCAN_UA)
    # A TLS ClientHello sent to port 80; nginx writes the bytes hex-escaped.
    hello = r"\x16\x03\x01\x00\xEE\x01\x00\x00\xEA\x03\x03"
    log.request(t + 1, ip, hello, 400, NGINX_400, "-", "-")
    for base in (11 * 3600 + 40 * 60, 16 * 3600 + 20 * 60):
        t = base + rng.uniform(0, 30)
        for path in ("/", "/.env", "/.git/config", "/wp-login.php", "/phpmyadmin/"):
            status, size = scan_status(path)
            log.request(t, ip, f"GET {path} HTTP/1.1", status, size, "-", ZGRAB_UA)
            t += rng.uniform(0.1, 0.8)
    t = 11 * 3600 + 41 * 60 + 20.0
    prefix, suffix = "GET /search?q=", " HTTP/1.1"
    request = prefix + "A" * (LONG_REQUEST_LENGTH - len(prefix) - len(suffix)) + suffix
    log.request(t, ip, request, 414, 182, "-", ZGRAB_UA)


def make_visitors(rng: random.Random, count: int) -> list[Visitor]:
    visitors = []
    for _ in range(count):
        ua, _weight, apple = rng.choices(BROWSERS, weights=[b[1] for b in BROWSERS])[0]
        visitors.append(Visitor(public_ipv4(rng), ua, apple))
    return visitors


def build_access(seed: int, lines: int) -> bytes:
    log = Log()
    rng = stream(seed, "access")
    add_health_checks(log, rng)
    for scan in (scan_nikto, scan_sqlmap, scan_zgrab):
        scan(log, rng)
    add_traffic(log, rng, make_visitors(rng, 700), lines)
    return log.render()


def add_traffic(log: Log, rng: random.Random, visitors: list[Visitor], lines: int) -> None:
    while len(log) < lines:
        if rng.random() < 0.08:
            add_bot_visit(log, rng)
        else:
            add_visit(log, rng, visitors)


# --- Rotated history: earlier days, as logrotate (daily, delaycompress) leaves them

ROTATED_SHARE = 2  # an earlier day gets lines // ROTATED_SHARE lines, to keep the repo small
GZIP_LEVEL = 9


class Campaign(NamedTuple):
    """SSH password guessing from one address on an earlier day."""

    ip: str
    user: str  # "" = a different invalid user each time, "-" = pre-auth probes
    tries: tuple[int, int]  # passwords per connection (6 trips MaxAuthTries)
    start: str  # "HH:MM" UTC after the origin's midnight; may exceed 24:00
    connections: int
    gap: tuple[float, float]  # minutes between connections


class Probe(NamedTuple):
    """A short web scan from one address on an earlier day."""

    ip: str
    start: str  # "HH:MM" UTC
    ua: str
    paths: tuple[str, ...]


class Day(NamedTuple):
    date: str  # ISO date, UTC
    auth: str  # file names under the output directory; "" = none
    access: str
    campaigns: tuple[Campaign, ...]
    probes: tuple[Probe, ...]


OLD_CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/91.0.4472.124 Safari/537.36"
)

# Newest first, like the rotation numbers. The attackers of 2026-11-24 were
# already at it: 218.92.0.107 every day, 193.32.162.157 found "deploy" the day
# before it got in. No attempt succeeds before 2026-11-24.
HISTORY: tuple[Day, ...] = (
    Day(
        "2026-11-23",
        "auth.log.1",
        "access.log.1",
        (
            Campaign("218.92.0.107", "root", (3, 3), "05:40", 30, (20, 35)),
            Campaign("193.32.162.157", "", (1, 2), "13:05", 14, (0.5, 1.5)),
            Campaign("193.32.162.157", "deploy", (3, 3), "13:41", 2, (2, 4)),
            Campaign("185.220.101.47", "root", (6, 6), "21:12", 4, (1, 3)),
        ),
        (
            Probe(
                "45.155.205.233",
                "13:22",
                OLD_CHROME_UA,
                (
                    "/",
                    "/.env",
                    "/.git/config",
                    "/wp-login.php",
                    "/admin/",
                    "/config.php.bak",
                    "/.aws/credentials",
                    "/phpinfo.php",
                ),
            ),
            Probe("185.220.101.47", "21:05", ZGRAB_UA, ("/", "/.env")),
        ),
    ),
    Day(
        "2026-11-22",
        "auth.log.2.gz",
        "access.log.2.gz",
        (
            Campaign("218.92.0.107", "root", (3, 3), "08:15", 22, (25, 40)),
            Campaign("141.98.11.23", "-", (0, 0), "02:03", 12, (1, 2)),
            Campaign("45.155.205.233", "", (1, 3), "16:47", 18, (0.3, 1.3)),
        ),
        (
            Probe("141.98.11.23", "01:58", MASSCAN_UA, ("/",)),
            Probe("141.98.11.23", "01:59", ZGRAB_UA, ("/", "/.git/config", "/phpmyadmin/", "/wp-login.php")),
            Probe("45.155.205.233", "16:40", OLD_CHROME_UA, ("/.env", "/wp-login.php", "/xmlrpc.php", "/.git/HEAD")),
        ),
    ),
    Day(
        "2026-11-21",
        "auth.log.3.gz",
        "",
        (
            Campaign("218.92.0.107", "root", (3, 3), "10:30", 16, (30, 45)),
            Campaign("2a06:4880:1000::d5", "", (1, 1), "19:20", 12, (1, 2.5)),
        ),
        (),
    ),
)


def rotated_attackers() -> dict[str, tuple[str, ...]]:
    """Rotated file name -> attacker addresses in it (for the demo and the tests)."""
    found: dict[str, tuple[str, ...]] = {}
    for day in HISTORY:
        if day.auth:
            found[day.auth] = tuple(dict.fromkeys(c.ip for c in day.campaigns))
        if day.access:
            found[day.access] = tuple(dict.fromkeys(p.ip for p in day.probes))
    return found


def day_origin(iso_date: str) -> datetime:
    return datetime.fromisoformat(iso_date).replace(tzinfo=UTC)


def clock(hhmm: str) -> float:
    hours, minutes = hhmm.split(":")
    return int(hours) * 3600 + int(minutes) * 60.0


def add_campaign(log: Log, rng: random.Random, c: Campaign, until: float = SPAN - 120) -> None:
    t = clock(c.start) + rng.uniform(0, 59)
    for _ in range(c.connections):
        if t >= until:  # a rotated file holds its own day and nothing else
            break
        if c.user == "-":
            probe_without_login(log, rng, t, c.ip)
        elif c.user:
            try_known_user(log, rng, t, c.ip, c.user, rng.randint(*c.tries))
        else:
            try_invalid_user(log, rng, t, c.ip, rng.choice(INVALID_USERS), rng.randint(*c.tries))
        t += rng.uniform(*c.gap) * 60


def add_probe(log: Log, rng: random.Random, p: Probe) -> None:
    t = clock(p.start) + rng.uniform(0, 59)
    version = "1.0" if p.ua == MASSCAN_UA else "1.1"
    for path in p.paths:
        status, size = scan_status(path)
        log.request(t, p.ip, f"GET {path} HTTP/{version}", status, size, "-", p.ua)
        t += rng.uniform(0.2, 2.0)


def build_auth_day(seed: int, day: Day, lines: int, last_id: int) -> tuple[bytes, int]:
    """One earlier day of auth.log; returns it and how many sessions it used.

    Session ids count down from ``last_id``, so they run on into the next day.
    """
    tag = f"@{day.date}"  # separate PRNG streams per day
    log = Log(origin=day_origin(day.date))
    rng = stream(seed, "attacks" + tag)
    for campaign in day.campaigns:
        add_campaign(log, rng, campaign)
    cron = plan_cron(stream(seed, "cron" + tag))
    budget = lines - 2 * len(cron) - len(log)
    sessions = plan_sessions(stream(seed, "sessions" + tag), budget, log.origin)
    assign_ids(stream(seed, "pids" + tag), sessions, last_id + 1 - len(sessions))
    add_cron_sessions(log, cron)
    for s in sessions:
        add_session(log, s)
    return log.render(), len(sessions)


def build_access_day(seed: int, day: Day, lines: int) -> bytes:
    log = Log(origin=day_origin(day.date))
    rng = stream(seed, f"access@{day.date}")
    add_health_checks(log, rng)
    for probe in day.probes:
        add_probe(log, rng, probe)
    add_traffic(log, rng, make_visitors(rng, 300), lines)
    return log.render()


def gzip_bytes(data: bytes) -> bytes:
    """gzip with no name and mtime 0, so equal input gives equal bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


# --- New Year: year inference across a rotation ------------------------------------
# RFC 3164 stamps carry no year: a reader must notice that "Jan  1" in auth.log
# follows "Dec 31" in auth.log.1. Both files come from one 12-hour log split at
# midnight, so a session opened in the old year closes in the new one.

NEWYEAR_ORIGIN = datetime(2026, 12, 31, tzinfo=UTC)
NEWYEAR_FROM, NEWYEAR_MIDNIGHT, NEWYEAR_UNTIL = 18 * 3600, SPAN, SPAN + 6 * 3600
NEWYEAR_FIRST_SESSION_ID = 3911  # about 56 sessions a day since FIRST_SESSION_ID
NEWYEAR_CAMPAIGNS = (
    Campaign("218.92.0.107", "root", (3, 3), "18:12", 40, (14, 26)),
    Campaign("2a06:4880:1000::d5", "", (1, 2), "24:00", 8, (0.5, 1.5)),
)


def newyear_session(rng: random.Random, p: Profile, start: float, minutes: float | None = None) -> Session:
    end = start + (minutes if minutes is not None else rng.uniform(*p.minutes)) * 60
    return Session(
        user=p.user,
        ip=rng.choice(p.ips),
        port=ephemeral_port(rng),
        start=start,
        end=end,
        interactive=p.interactive,
        key=fingerprint(p.user, p.key),
        pwd=p.pwd,
        commands=draw_commands(rng, p, start, end, NEWYEAR_ORIGIN),
    )


def build_newyear(seed: int) -> dict[str, bytes]:
    rng = stream(seed, "newyear")
    log = Log(origin=NEWYEAR_ORIGIN)
    cron = plan_cron(rng) + [replace(r, t=r.t + SPAN, pid=r.pid + int(0.9 * SPAN)) for r in plan_cron(rng)]
    add_cron_sessions(log, [r for r in cron if NEWYEAR_FROM <= r.t and r.t + r.duration < NEWYEAR_UNTIL])
    ansible, deploy, alice = PROFILES[3], PROFILES[4], PROFILES[0]
    sessions = [newyear_session(rng, deploy, NEWYEAR_FROM + rng.uniform(30, 40) * 60)]
    t = NEWYEAR_FROM + rng.uniform(10, 40) * 60
    while t < NEWYEAR_UNTIL - 15 * 60:
        sessions.append(newyear_session(rng, ansible, t))
        t += rng.uniform(70, 130) * 60
    # alice is on call: logged in before midnight, out after it, sudo on both sides.
    on_call = newyear_session(rng, alice, NEWYEAR_MIDNIGHT - rng.uniform(20, 25) * 60, 41.5)
    on_call.commands = [
        Sudo(
            NEWYEAR_MIDNIGHT - rng.uniform(4, 6) * 60,
            "/usr/bin/journalctl -u nginx --since today",
            rng.uniform(0.2, 1.0),
        ),
        Sudo(NEWYEAR_MIDNIGHT + rng.uniform(6, 8) * 60, "/usr/bin/systemctl reload nginx", rng.uniform(0.2, 1.0)),
    ]
    sessions.append(on_call)
    assign_ids(rng, sessions, NEWYEAR_FIRST_SESSION_ID)
    for s in sessions:
        add_session(log, s)
    for campaign in NEWYEAR_CAMPAIGNS:
        add_campaign(log, rng, campaign, until=NEWYEAR_UNTIL - 120)
    times = [t for t, _, _ in log.events]
    assert NEWYEAR_FROM <= min(times) and max(times) < NEWYEAR_UNTIL, "outside the window"
    return {
        "newyear/auth.log.1": log.render(NEWYEAR_FROM, NEWYEAR_MIDNIGHT),
        "newyear/auth.log": log.render(NEWYEAR_MIDNIGHT, NEWYEAR_UNTIL),
    }


def generate_history(seed: int = DEFAULT_SEED, lines: int = DEFAULT_LINES) -> dict[str, bytes]:
    """Rotated files (relative name -> bytes) and the New Year pair."""
    files: dict[str, bytes] = {}
    last_id = FIRST_SESSION_ID - 1
    for day in HISTORY:
        if day.auth:
            text, used = build_auth_day(seed, day, lines // ROTATED_SHARE, last_id)
            last_id -= used
            files[day.auth] = gzip_bytes(text) if day.auth.endswith(".gz") else text
        if day.access:
            text = build_access_day(seed, day, lines // ROTATED_SHARE)
            files[day.access] = gzip_bytes(text) if day.access.endswith(".gz") else text
    files.update(build_newyear(seed))
    return files


# --- Broken archives: for tests of the decompression limits ------------------------

# One overlong request (nginx answers 414), repeated until the stream inflates
# to BOMB_BYTES. The address is from a documentation range (RFC 5737). Long
# runs of one byte compress best: DEFLATE cannot beat about 1032:1, so the
# file is about 1/900 of BOMB_BYTES whatever the content.
BOMB_BYTES = 1 << 30  # at least this much once decompressed
BOMB_REQUEST = "GET /search?q=" + "A" * 16_000 + " HTTP/1.1"
BOMB_LINE = access_line(11 * 3600 + 41 * 60 + 20, "198.51.100.7", BOMB_REQUEST, 414, 182, "-", ZGRAB_UA) + b"\n"
GZIP_HEADER = b"\x1f\x8b\x08\x00" + bytes(4) + b"\x02\xff"  # no name, mtime 0, level 9


def build_bomb(line: bytes = BOMB_LINE, at_least: int = BOMB_BYTES) -> bytes:
    """gzip of ``line`` repeated past ``at_least`` bytes, compressed piece by piece."""
    count = -(-at_least // len(line))
    per_piece = max(1, (1 << 20) // len(line))  # about 1 MiB handed to zlib at a time
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts, crc, left = [GZIP_HEADER], 0, count
    while left:
        piece = line * min(left, per_piece)
        parts.append(deflate.compress(piece))
        crc = zlib.crc32(piece, crc)
        left -= min(left, per_piece)
    parts.append(deflate.flush())
    parts.append(struct.pack("<II", crc, (count * len(line)) & 0xFFFFFFFF))  # CRC32, ISIZE
    return b"".join(parts)


def generate_broken(history: dict[str, bytes]) -> dict[str, bytes]:
    """A gzip stream cut in half (the oldest rotated auth.log) and a gzip bomb."""
    oldest = next(d.auth for d in reversed(HISTORY) if d.auth.endswith(".gz"))
    whole = history[oldest]
    return {"broken/truncated.log.gz": whole[: len(whole) // 2], "broken/bomb.log.gz": build_bomb()}


# --- Output ----------------------------------------------------------------------


def generate(seed: int = DEFAULT_SEED, lines: int = DEFAULT_LINES) -> dict[str, bytes]:
    """Return file name -> content of today's files; pure, so tests can call it directly."""
    scn = build_scenario(seed, lines)
    return {"auth.log": build_auth(scn), "syslog": build_syslog(scn, lines), "access.log": build_access(seed, lines)}


def generate_all(seed: int = DEFAULT_SEED, lines: int = DEFAULT_LINES) -> dict[str, bytes]:
    """Every file, by path relative to the output directory (builds the bomb: seconds)."""
    history = generate_history(seed, lines)
    return {**generate(seed, lines), **history, **generate_broken(history)}


NL = b"\n"


def describe(data: bytes) -> str:
    """Summary for the progress line; inflates at most 8 MiB of a .gz."""
    if not data.startswith(GZIP_HEADER[:3]):
        return f"{data.count(NL)} lines, {len(data)} bytes"
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    text = inflate.decompress(data, 8 << 20)
    if inflate.eof:
        return f"{len(data)} bytes gzip of {text.count(NL)} lines, {len(text)} bytes"
    if inflate.unconsumed_tail:
        isize = int.from_bytes(data[-4:], "little")
        return f"{len(data)} bytes gzip, inflates to {isize} bytes (not expanded)"
    return f"{len(data)} bytes gzip, truncated after {text.count(NL)} lines"


def write_atomic(path: Path, data: bytes) -> None:
    # A temp file in the same directory makes os.replace a same-filesystem rename.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write Bastion's synthetic sample logs.")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory (default: examples/logs next to this script)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"PRNG seed (default: {DEFAULT_SEED})")
    parser.add_argument(
        "--lines",
        type=positive_int,
        default=DEFAULT_LINES,
        help="approximate lines per file of the current day (earlier days "
        "get half); attack traces and scheduled jobs are always "
        f"included (default: {DEFAULT_LINES})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name, data in generate_all(args.seed, args.lines).items():
        path = args.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        print(f"{path}: {describe(data)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
