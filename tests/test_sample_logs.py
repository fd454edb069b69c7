"""Checks the committed sample logs in examples/logs.

They must match what examples/generate_logs.py produces for the default seed,
be a sensible size, and contain the attack traces and hostile lines the demo
and the sanitizer rely on. The rotated history (auth.log.1, *.gz), the New
Year pair and the broken archives are checked too; the gzip bomb is only ever
inflated with a bound.
"""

from __future__ import annotations

import gzip
import itertools
import re
import subprocess
import sys
import zlib
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "generate_logs.py"
LOG_DIR = ROOT / "examples" / "logs"
NAMES = ("auth.log", "syslog", "access.log")
TODAY = date(2026, 11, 24)
ROTATED = {  # rotated file -> the day it holds
    "auth.log.1": date(2026, 11, 23),
    "auth.log.2.gz": date(2026, 11, 22),
    "auth.log.3.gz": date(2026, 11, 21),
    "access.log.1": date(2026, 11, 23),
    "access.log.2.gz": date(2026, 11, 22),
}
AUTH_ROTATIONS = ("auth.log", "auth.log.1", "auth.log.2.gz", "auth.log.3.gz")
NEWYEAR = ("newyear/auth.log.1", "newyear/auth.log")
TRUNCATED, BOMB = "broken/truncated.log.gz", "broken/bomb.log.gz"
FILES = NAMES + tuple(ROTATED) + NEWYEAR + (TRUNCATED, BOMB)
GIB = 1 << 30
GZIP_MAGIC = b"\x1f\x8b\x08"
# What the demo can grep (zgrep -E) across auth.log* to find the persistent attacker.
PERSISTENT_ATTACKER = "218.92.0.107"
PERSISTENT_PATTERN = rb"Failed password for (invalid user )?\S+ from 218\.92\.0\.107 port "


gen = load_script("generate_logs", SCRIPT)


def _text(name: str) -> bytes:
    """A committed log, decompressed if it is a (complete) .gz."""
    data = (LOG_DIR / name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def _lines(name: str) -> list[bytes]:
    return _text(name).split(b"\n")[:-1]


def _month(day: date) -> bytes:
    return b"JanFebMarAprMayJunJulAugSepOctNovDec"[3 * day.month - 3 : 3 * day.month]


@pytest.fixture(scope="module")
def auth() -> list[bytes]:
    return _lines("auth.log")


@pytest.fixture(scope="module")
def access() -> list[bytes]:
    return _lines("access.log")


@pytest.fixture(scope="module")
def syslog() -> list[bytes]:
    return _lines("syslog")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """Run the script once (default seed) into a scratch directory."""
    out = tmp_path_factory.mktemp("regenerated")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, check=True, timeout=600
    )
    return out, result.stderr.splitlines()


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_generator_writes_every_file_once(regenerated: tuple[Path, list[bytes]]) -> None:
    out, progress = regenerated
    assert len(progress) == len(FILES)  # one line per file
    for name in FILES:
        assert sum(line.startswith(str(out / name).encode() + b": ") for line in progress) == 1
    assert _files_under(out) == sorted(FILES)  # no temp files left
    assert _files_under(LOG_DIR) == sorted(FILES)  # nothing stale committed


def _why_different(name: str, fresh: bytes, committed: bytes) -> str:
    hint = f"examples/logs/{name} is stale: rerun examples/generate_logs.py"
    if name.endswith(".gz") and name not in (TRUNCATED, BOMB):
        if gzip.decompress(fresh) == gzip.decompress(committed):
            return (
                f"{name}: same content, other gzip bytes; this zlib "
                f"({zlib.ZLIB_RUNTIME_VERSION}) compresses differently"
            )
    return hint


@pytest.mark.parametrize("name", FILES)
def test_generator_reproduces_committed_file(regenerated: tuple[Path, list[bytes]], name: str) -> None:
    fresh, committed = (regenerated[0] / name).read_bytes(), (LOG_DIR / name).read_bytes()
    assert fresh == committed, _why_different(name, fresh, committed)


def test_other_seed_differs() -> None:
    assert gen.generate(seed=1)["auth.log"] != gen.generate()["auth.log"]
    other, default = gen.generate_history(seed=1), gen.generate_history()
    for name in ("auth.log.1", "access.log.1", "newyear/auth.log"):
        assert other[name] != default[name], name


def test_gzip_members_carry_no_name_or_time() -> None:
    for name in FILES:
        if name.endswith(".gz"):
            head = (LOG_DIR / name).read_bytes()[:10]
            assert head[:3] == GZIP_MAGIC, name
            assert head[3] == 0, name  # FLG: no FNAME, FCOMMENT, FEXTRA
            assert head[4:8] == bytes(4), name  # MTIME


@pytest.mark.parametrize("name", NAMES)
def test_line_count_and_termination(name: str) -> None:
    data = (LOG_DIR / name).read_bytes()
    assert data.endswith(b"\n")
    assert 2000 <= data.count(b"\n") <= 10000


def _clock(name: str, line: bytes, day: date = TODAY) -> bytes:
    """The HH:MM:SS of a line, which must be stamped with ``day``."""
    month = _month(day)
    if name.startswith("access.log"):
        stamp = rb"\[%02d/%s/%d:(\d\d:\d\d:\d\d) \+0000\]" % (day.day, month, day.year)
        match = re.search(stamp, line)
        assert match, line[:120]
        return match.group(1)
    assert line.startswith(b"%s %2d " % (month, day.day)), line[:120]
    assert line[15:23] == b" web-01 ", line[:120]
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
    for needle in (
        b"Invalid user oracle from ",
        b"Failed password for invalid user admin from ",
        b"Connection closed by authenticating user root ",
        b"[preauth]",
        b"Disconnecting invalid user ",
        b"error: maximum authentication attempts exceeded",
        b"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh",
    ):
        assert needle in text, needle


def test_compromised_login(auth: list[bytes]) -> None:
    c = gen.COMPROMISED_LOGIN
    accepted = f"Accepted password for {c.user} from {c.ip} port {c.port} ssh2".encode()
    hits = [i for i, line in enumerate(auth) if accepted in line]
    assert len(hits) == 1
    assert sum(b"Accepted password" in line for line in auth) == 1
    assert auth[hits[0]].startswith(c.at.strftime("Nov %d %H:%M:%S").encode())
    failed = f"Failed password for {c.user} from {c.ip} port ".encode()
    before = [line for line in auth[: hits[0]] if failed in line]
    assert len(before) == gen.COMPROMISED_FAILURES >= 25
    opened = f"session opened for user {c.user}(uid={c.uid}) by (uid=0)".encode()
    assert opened in auth[hits[0] + 1]


def test_sudo_misuse_after_compromise(auth: list[bytes]) -> None:
    text = b"\n".join(auth)
    shadow = re.search(
        rb"sudo: +deploy : TTY=pts/\d+ ; PWD=/home/deploy ; USER=root ; "
        rb"COMMAND=/usr/bin/cat /etc/shadow\n",
        text,
    )
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
    assert re.search(rb"kernel: \[ *\d+\.\d{6}\] \[UFW BLOCK\] .* SRC=[\d.]+ DST=10\.0\.1\.23 ", syslog_text)
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
    for path in (
        b"/wp-login.php",
        b"/.env",
        b"/.git/config",
        b"/phpmyadmin/",
        b"/index.php?id=1%27%20OR%201=1--",
        b"/cgi-bin/../../../../etc/passwd",
    ):
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


# --- Rotated history ---------------------------------------------------------------


@pytest.mark.parametrize("name", ROTATED)
def test_rotated_file_holds_its_day(name: str) -> None:
    raw = (LOG_DIR / name).read_bytes()
    assert raw.startswith(GZIP_MAGIC) == name.endswith(".gz")  # delaycompress: .1 is plain
    data = _text(name)
    assert data.endswith(b"\n")
    clocks = [_clock(name, line, ROTATED[name]) for line in data.split(b"\n")[:-1]]
    assert clocks == sorted(clocks)
    assert clocks[0] < b"01:00:00" and clocks[-1] > b"20:00:00"


@pytest.mark.parametrize("name", ROTATED)
def test_rotated_file_is_smaller_than_today(name: str) -> None:
    data = _text(name)
    today = (LOG_DIR / (name.split(".log")[0] + ".log")).read_bytes()
    assert 1000 <= data.count(b"\n") <= 1600
    assert data.count(b"\n") < today.count(b"\n") and len(data) < len(today)


def test_rotated_gzip_decompresses_completely() -> None:
    for name in ROTATED:
        if name.endswith(".gz"):
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            text = inflate.decompress((LOG_DIR / name).read_bytes())
            assert inflate.eof and not inflate.unused_data, name  # one whole member
            assert text == _text(name) and text.count(b"\n") >= 1000, name


def test_rotated_session_ids_lead_up_to_today() -> None:
    newest_first = ("auth.log", "auth.log.1", "auth.log.2.gz", "auth.log.3.gz")
    ranges = []
    for name in newest_first:
        ids = [int(x) for x in re.findall(rb"New session (\d+) of user", _text(name))]
        assert ids == sorted(ids) and len(ids) == len(set(ids)), name
        ranges.append((ids[0], ids[-1]))
    for (newer_first, _), (_, older_last) in itertools.pairwise(ranges):
        assert older_last + 1 == newer_first


def _sources(name: str) -> set[str]:
    """The attacker addresses a file mentions (as client, or as sshd's peer)."""
    text = _text(name)
    found = set()
    for ip in gen.ATTACKER_IPS:
        pattern = rf"^{re.escape(ip)} - - " if name.startswith("access") else rf"[ =]{re.escape(ip)}( |$)"
        if re.search(pattern.encode(), text, re.MULTILINE):
            found.add(ip)
    return found


def _brute_forcers(text: bytes) -> set[str]:
    """BRUTE_FORCE_IPS with at least 5 failed passwords in text."""
    return {
        ip
        for ip in gen.BRUTE_FORCE_IPS
        if len(re.findall(rb"Failed password for .* from " + re.escape(ip).encode() + rb" port ", text)) >= 5
    }


def test_attackers_recur_across_rotations() -> None:
    failed = {name: _brute_forcers(_text(name)) for name in AUTH_ROTATIONS}
    assert len(failed["auth.log.1"]) >= 2
    for name in AUTH_ROTATIONS:
        assert failed[name], name
    on_every_day = set.intersection(*failed.values())
    assert PERSISTENT_ATTACKER in on_every_day
    for name in AUTH_ROTATIONS:  # the pattern handed to the demo
        assert len(re.findall(PERSISTENT_PATTERN, _text(name))) >= 20, name
    # The compromised login's source was already guessing the day before.
    assert gen.COMPROMISED_LOGIN.ip in failed["auth.log.1"]
    assert b"Failed password for deploy from " + gen.COMPROMISED_LOGIN.ip.encode() in _text("auth.log.1")


def test_rotated_attackers_are_the_documented_ones() -> None:
    documented = gen.rotated_attackers()
    assert sorted(documented) == sorted(ROTATED)
    for name in ROTATED:
        assert _sources(name) == set(documented[name]), name
    for name in ("access.log.1", "access.log.2.gz"):
        assert set(documented[name]) <= set(gen.SCANNER_IPS), name


def test_nobody_gets_in_before_today() -> None:
    for name in (*AUTH_ROTATIONS[1:], *NEWYEAR):
        text = _text(name)
        assert b"Accepted password" not in text, name
        for ip in gen.ATTACKER_IPS:
            assert re.search(rb"Accepted \S+ for \S+ from " + re.escape(ip).encode(), text) is None, (name, ip)


def test_hostile_lines_only_today() -> None:
    for name in (*ROTATED, *NEWYEAR):
        data = _text(name)
        data.decode("utf-8")  # raises on invalid UTF-8
        assert b"\x00" not in data and b"\x1b" not in data, name
        assert max(len(line) for line in data.split(b"\n")) < 1000, name


# --- New Year ----------------------------------------------------------------------


def test_newyear_pair_spans_the_turn_of_the_year() -> None:
    old, new = (_lines(name) for name in NEWYEAR)
    old_clocks = [_clock("auth.log", line, date(2026, 12, 31)) for line in old]
    new_clocks = [_clock("auth.log", line, date(2027, 1, 1)) for line in new]
    assert old[0].startswith(b"Dec 31 18:") and new[0].startswith(b"Jan  1 00:0")
    assert old_clocks == sorted(old_clocks) and new_clocks == sorted(new_clocks)
    assert old_clocks[0] >= b"18:00:00" and old_clocks[-1] > b"23:50:00"
    assert new_clocks[-1] < b"06:00:00"
    assert 100 <= len(old) <= 600 and 100 <= len(new) <= 600
    for lines in (old, new):
        assert sum(b"Failed password for root from 218.92.0.107 " in x for x in lines) >= 10


def test_newyear_session_crosses_midnight() -> None:
    old, new = (_text(name) for name in NEWYEAR)
    opened = set(re.findall(rb"New session (\d+) of user", old))
    closed = set(re.findall(rb"Removed session (\d+)\.", new))
    crossing = opened & closed
    assert len(crossing) == 1
    sid = crossing.pop()
    assert re.search(rb"New session " + sid + rb" of user alice\.", old)
    assert b"sudo:    alice : " in old and b"sudo:    alice : " in new


# --- Broken archives ---------------------------------------------------------------


def test_truncated_gzip_is_a_valid_stream_cut_short() -> None:
    data = (LOG_DIR / TRUNCATED).read_bytes()
    whole = (LOG_DIR / "auth.log.3.gz").read_bytes()
    assert data.startswith(GZIP_MAGIC) and whole.startswith(data)
    assert len(whole) * 0.3 < len(data) < len(whole) * 0.7  # cut in the middle
    with pytest.raises((EOFError, zlib.error)):
        gzip.decompress(data)
    with pytest.raises(zlib.error):
        zlib.decompress(data, 16 + zlib.MAX_WBITS)
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    start = inflate.decompress(data)
    assert not inflate.eof
    lines = start.split(b"\n")[:-1]
    assert len(lines) >= 100 and all(line.startswith(b"Nov 21 ") for line in lines)


def _inflated_size(data: bytes, limit: int) -> tuple[int, bool]:
    """Stream-inflate a gzip member, 1 MiB at a time, stopping once past limit."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total, pending = 0, data
    while total <= limit and not inflate.eof:
        out = inflate.decompress(pending, 1 << 20)
        total += len(out)
        pending = inflate.unconsumed_tail
        if not out and not pending:
            break  # input used up before the end of the stream
    return total, inflate.eof


def test_bomb_is_small_with_a_huge_declared_size() -> None:
    data = (LOG_DIR / BOMB).read_bytes()
    assert len(data) < 1_500_000  # DEFLATE tops out near 1032:1
    assert data[:3] == GZIP_MAGIC
    isize = int.from_bytes(data[-4:], "little")  # uncompressed size mod 2**32
    assert GIB <= isize < GIB + (1 << 20)
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    head = inflate.decompress(data, 1 << 20)
    assert len(head) == 1 << 20 and not inflate.eof
    lines = head.split(b"\n")[:-1]
    assert len(lines) >= 10
    access = (
        rb'^198\.51\.100\.7 - - \[24/Nov/2026:\d\d:\d\d:\d\d \+0000\] "GET /search\?q=A+ '
        rb'HTTP/1\.1" 414 \d+ "-" "[^"]*"$'
    )
    assert all(re.match(access, line) for line in lines)


@pytest.mark.slow
def test_bomb_really_inflates_past_one_gib() -> None:
    data = (LOG_DIR / BOMB).read_bytes()
    total, complete = _inflated_size(data, GIB + (1 << 24))  # bounded: ~2 s, 1 MiB at a time
    assert complete and total >= GIB
    assert total == int.from_bytes(data[-4:], "little")
    assert _inflated_size(data[: len(data) // 2], GIB)[1] is False  # and it notices a cut
