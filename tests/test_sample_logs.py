"""Checks the committed sample logs in examples/logs.

They must match what examples/generate_logs.py produces for the default seed,
be a sensible size, and contain the attack traces and hostile lines the demo
and the sanitizer rely on.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "generate_logs.py"
LOG_DIR = ROOT / "examples" / "logs"
NAMES = ("auth.log", "syslog", "access.log")


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_logs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _lines(name: str) -> list[bytes]:
    return (LOG_DIR / name).read_bytes().split(b"\n")[:-1]


@pytest.fixture(scope="module")
def auth() -> list[bytes]:
    return _lines("auth.log")


@pytest.fixture(scope="module")
def access() -> list[bytes]:
    return _lines("access.log")


@pytest.fixture(scope="module")
def syslog() -> list[bytes]:
    return _lines("syslog")


def test_generator_reproduces_committed_logs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)],
                            capture_output=True, check=True)
    assert len(result.stderr.splitlines()) == len(NAMES)
    for name in NAMES:
        fresh = (tmp_path / name).read_bytes()
        assert fresh == (LOG_DIR / name).read_bytes(), \
            f"examples/logs/{name} is stale: rerun examples/generate_logs.py"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(NAMES)  # no temp files left


def test_other_seed_differs() -> None:
    assert gen.generate(seed=1)["auth.log"] != gen.generate()["auth.log"]


@pytest.mark.parametrize("name", NAMES)
def test_line_count_and_termination(name: str) -> None:
    data = (LOG_DIR / name).read_bytes()
    assert data.endswith(b"\n")
    assert 2000 <= data.count(b"\n") <= 10000


def _clock(name: str, line: bytes) -> bytes:
    if name == "access.log":
        match = re.search(rb"\[24/Nov/2026:(\d\d:\d\d:\d\d) \+0000\]", line)
        assert match, line[:120]
        return match.group(1)
    assert line.startswith(b"Nov 24 ") and line[15:23] == b" web-01 ", line[:120]
    return line[7:15]


@pytest.mark.parametrize("name", NAMES)
def test_timestamps_monotonic_within_one_day(name: str) -> None:
    clocks = [_clock(name, line) for line in _lines(name)]
    assert clocks == sorted(clocks)
    assert clocks[-1] > b"20:00:00" and clocks[0] < b"01:00:00"


def test_brute_force_from_every_listed_address(auth: list[bytes]) -> None:
    assert 4 <= len(gen.BRUTE_FORCE_IPS) <= 6
    for ip in gen.BRUTE_FORCE_IPS:
        needle = f" from {ip} port ".encode()
        failed = [line for line in auth if b"Failed password" in line and needle in line]
        assert len(failed) >= 5, ip
    assert set(gen.BRUTE_FORCE_IPS) | set(gen.SCANNER_IPS) == set(gen.ATTACKER_IPS)


def test_preauth_noise_variety(auth: list[bytes]) -> None:
    text = b"\n".join(auth)
    for needle in (b"Invalid user oracle from ", b"Failed password for invalid user admin from ",
                   b"Connection closed by authenticating user root ", b"[preauth]",
                   b"Disconnecting invalid user ",
                   b"error: maximum authentication attempts exceeded",
                   b"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh"):
        assert needle in text, needle


def test_compromised_login(auth: list[bytes]) -> None:
    c = gen.COMPROMISED_LOGIN
    accepted = f"Accepted password for {c.user} from {c.ip} port {c.port} ssh2".encode()
    hits = [i for i, line in enumerate(auth) if accepted in line]
    assert len(hits) == 1
    assert sum(b"Accepted password" in line for line in auth) == 1
    assert auth[hits[0]].startswith(c.at.strftime("Nov %d %H:%M:%S").encode())
    failed = f"Failed password for {c.user} from {c.ip} port ".encode()
    before = [line for line in auth[:hits[0]] if failed in line]
    assert len(before) == gen.COMPROMISED_FAILURES >= 25
    opened = f"session opened for user {c.user}(uid={c.uid}) by (uid=0)".encode()
    assert opened in auth[hits[0] + 1]


def test_sudo_misuse_after_compromise(auth: list[bytes]) -> None:
    text = b"\n".join(auth)
    shadow = re.search(rb"sudo: +deploy : TTY=pts/\d+ ; PWD=/home/deploy ; USER=root ; "
                       rb"COMMAND=/usr/bin/cat /etc/shadow\n", text)
    assert shadow
    assert text.index(b"Accepted password for deploy") < shadow.start()
    user = gen.NOT_IN_SUDOERS_USER.encode()
    assert b"pam_unix(sudo:auth): authentication failure;" in text
    assert re.search(rb"sudo: +" + user + rb" : 3 incorrect password attempts ;", text)
    assert re.search(rb"sudo: +" + user + rb" : user NOT in sudoers ;", text)


def test_normal_activity(auth: list[bytes], syslog: list[bytes], access: list[bytes]) -> None:
    auth_text = b"\n".join(auth)
    for user in (b"alice", b"bob", b"ops"):
        assert b"Accepted publickey for " + user + b" from 10." in auth_text
    assert b"pam_unix(cron:session): session opened for user root(uid=0)" in auth_text
    assert b"systemd-logind[612]: New session " in auth_text
    syslog_text = b"\n".join(syslog)
    assert re.search(rb"kernel: \[ *\d+\.\d{6}\] \[UFW BLOCK\] .* SRC=[\d.]+ DST=10\.0\.1\.23 ",
                     syslog_text)
    for needle in (b"CRON[", b"dhclient[", b"Reloaded nginx.service", b"Started session-"):
        assert needle in syslog_text, needle
    statuses = [line.split(b'" ')[1].split(b" ")[0] for line in access if b'" ' in line]
    for status in (b"200", b"304", b"404"):
        assert statuses.count(status) >= 5, status
    assert sum(b"GET /healthz " in line for line in access) >= 100


def test_web_scanners(access: list[bytes]) -> None:
    text = b"\n".join(access)
    for ua in (b"Nikto/2.5.0", b"sqlmap/1.8", b"masscan/1.3", b"zgrab/0.x"):
        assert ua in text, ua
    for path in (b"/wp-login.php", b"/.env", b"/.git/config", b"/phpmyadmin/",
                 b"/index.php?id=1%27%20OR%201=1--", b"/cgi-bin/../../../../etc/passwd"):
        assert b"GET " + path + b" HTTP/1.1" in text, path
    assert 2 <= len(gen.SCANNER_IPS) <= 3
    for ip in gen.SCANNER_IPS:
        mine = [line for line in access if line.startswith(ip.encode() + b" - - [")]
        assert len(mine) >= 5, ip
    nikto = [line for line in access if b"Nikto/" in line]
    errors = [line for line in nikto if re.search(rb'" (400|403|404) ', line)]
    assert len(errors) > len(nikto) // 2


def test_hostile_content() -> None:
    auth, access = (LOG_DIR / "auth.log").read_bytes(), (LOG_DIR / "access.log").read_bytes()
    ansi = [line for line in auth.split(b"\n") if b"\x1b[31m" in line]
    assert len(ansi) == 1 and b"Invalid user \x1b[31m" in ansi[0]
    bad_utf8 = []
    for line in access.split(b"\n"):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad_utf8.append(line)
    assert len(bad_utf8) == 1 and gen.INVALID_UTF8_USER_AGENT in bad_utf8[0]
    every = [line for name in NAMES for line in _lines(name)]
    assert sum(b"\x00" in line for line in every) == 1
    assert max(len(line) for line in every) > 8000
    assert sum(len(line) > 8000 for line in every) == 1
