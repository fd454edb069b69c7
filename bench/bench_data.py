"""Generated data for bench/run.py: auth-style logs and a netset feed.

Everything lives in bench/.data/ (git-ignored) and is reused by later runs
when the manifest says it was made by the same generator with the same sizes.
The big log is one ~1 MiB block of varied lines written over and over with a
block counter in the hostname, so it is written at disk speed; a rare line is
added to a handful of blocks only.
"""

from __future__ import annotations

import functools
import json
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / ".data"
GENERATOR_VERSION = 1
MIB = 1 << 20

RARE_PATTERN = r"Accepted password for breakglass from [0-9.]+ port"
FREQUENT_PATTERN = "Failed password for"
SMALL_PATTERN = "Accepted (password|publickey) for"
ALL_PATTERN = "."
RARE_BLOCKS = 5
LISTED_IP = "45.155.205.233"
UNLISTED_IP = "8.8.4.4"
HOST_MARK = "@@@@@@"  # replaced by the block number (same width) in the big log

USERS = ["root", "admin", "deploy", "ubuntu", "oracle", "git", "postgres", "test", "alice", "bob", "jenkins", "backup"]
COMMANDS = [
    "/usr/bin/systemctl restart nginx",
    "/usr/bin/apt-get update",
    "/usr/bin/journalctl -u sshd",
    "/bin/cat /etc/hosts",
]
MONTHS = ["Oct", "Nov", "Dec"]


@dataclass(frozen=True)
class Dataset:
    small_log: Path
    big_log: Path
    feed: Path
    big_bytes: int
    small_bytes: int
    feed_entries: int
    rare_matches: int


def _ip(rng: random.Random) -> str:
    first = rng.choice([5, 23, 45, 61, 77, 91, 103, 118, 141, 175, 185, 193, 212, 218, 222])
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _stamp(rng: random.Random, second: int) -> str:
    day, rest = divmod(second, 86400)
    hour, rest = divmod(rest, 3600)
    return f"{MONTHS[day // 28 % 3]} {day % 28 + 1:2d} {hour:02d}:{rest // 60:02d}:{rest % 60:02d}"


def _message(rng: random.Random) -> str:
    user, ip, port, pid = rng.choice(USERS), _ip(rng), rng.randint(1024, 65535), rng.randint(300, 99999)
    roll = rng.random()
    if roll < 0.40:
        return f"sshd[{pid}]: Failed password for {user} from {ip} port {port} ssh2"
    if roll < 0.55:
        return f"sshd[{pid}]: Invalid user {user}{rng.randint(0, 99)} from {ip} port {port}"
    if roll < 0.62:
        return f"sshd[{pid}]: Connection closed by authenticating user {user} {ip} port {port} [preauth]"
    if roll < 0.65:
        method = rng.choice(["password", "publickey"])
        return f"sshd[{pid}]: Accepted {method} for {user} from {ip} port {port} ssh2"
    if roll < 0.75:
        return (
            f"sshd[{pid}]: pam_unix(sshd:session): session opened for user {user}(uid={rng.randint(1000, 1999)})"
            " by (uid=0)"
        )
    if roll < 0.82:
        return (
            f"sudo: {user:>9} : TTY=pts/{rng.randint(0, 9)} ; PWD=/home/{user}"
            f" ; USER=root ; COMMAND={rng.choice(COMMANDS)}"
        )
    if roll < 0.93:
        return f"CRON[{pid}]: pam_unix(cron:session): session closed for user root"
    return f"systemd-logind[{rng.randint(300, 999)}]: New session {rng.randint(1, 99999)} of user {user}."


def auth_block(rng: random.Random, size: int, host: str, start_s: int = 0) -> str:
    """Auth-log lines totalling at least `size` bytes, timestamps increasing."""
    lines, total, second = [], 0, start_s
    while total < size:
        second += rng.randint(0, 3)
        line = f"{_stamp(rng, second)} {host} {_message(rng)}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)


def write_small_log(path: Path, size: int) -> None:
    path.write_text(auth_block(random.Random(1), size, "web-01"))


def _rare_line(block: int) -> bytes:
    return (
        f"Nov 27 04:12:{block % 60:02d} blk{block:06d} sshd[4242]: Accepted password for breakglass"
        f" from 198.51.100.{block % 250 + 1} port 40022 ssh2\n"
    ).encode()


def _block_template() -> bytes:
    return auth_block(random.Random(2), MIB, f"blk{HOST_MARK}").encode()


def rare_block_numbers(blocks: int) -> set[int]:
    return {blocks * (2 * index + 1) // (2 * RARE_BLOCKS) for index in range(RARE_BLOCKS)} if blocks else set()


def write_big_log(path: Path, size: int) -> int:
    """A log of exactly `size` bytes; returns how many rare lines it holds."""
    template = _block_template()
    head, *rest = template.split(HOST_MARK.encode())
    blocks = size // len(template)
    rare = rare_block_numbers(blocks)
    written = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for block in range(blocks):
            chunk = head + b"".join(b"%06d" % block + piece for piece in rest)
            chunk = chunk + _rare_line(block) if block in rare else chunk
            out.write(chunk)
            written += len(chunk)
        out.write(_padding(size - written))
    os.replace(tmp, path)
    return len(rare)


def _padding(count: int) -> bytes:
    """Filler lines (no pattern of the bench matches them) up to `count` bytes."""
    if count <= 0:
        return b""
    line = b"Nov 30 23:59:59 blkpadding kernel: padding\n"
    full, rest = divmod(count, len(line))
    return line * full + (b"x" * (rest - 1) + b"\n" if rest else b"")


def write_feed(path: Path, entries: int) -> None:
    """A netset of `entries` lines: /32s and /24s, a few /16s, plus LISTED_IP; never 8.0.0.0/8."""
    rng = random.Random(3)
    lines = ["# generated by bench/bench_data.py (benchmark data, not a real feed)", LISTED_IP, "45.155.205.0/24"]
    while len(lines) < entries + 1:
        address = rng.getrandbits(32)
        if address >> 24 in (0, 8, 10, 127) or address >> 28 >= 14:
            continue
        roll = rng.random()
        prefix = 32 if roll < 0.55 else (24 if roll < 0.998 else 16)
        network = address >> (32 - prefix) << (32 - prefix)
        quad = ".".join(str(network >> shift & 0xFF) for shift in (24, 16, 8, 0))
        lines.append(quad if prefix == 32 else f"{quad}/{prefix}")
    path.write_text("\n".join(lines) + "\n")


def _manifest_ok(manifest: Path, wanted: dict[str, object]) -> bool:
    try:
        return json.loads(manifest.read_text()) == wanted
    except (OSError, ValueError):
        return False


def prepare(quick: bool, say: Callable[[str], None] = print) -> Dataset:
    """Generate (or reuse) the data for one run."""
    DATA_DIR.mkdir(exist_ok=True)
    big_mb = 200 if quick else 1024
    entries = 100_000 if quick else 1_000_000
    dataset = Dataset(
        small_log=DATA_DIR / "auth-1m.log",
        big_log=DATA_DIR / f"auth-{big_mb}m.log",
        feed=DATA_DIR / f"feed-{entries}.netset",
        big_bytes=big_mb * MIB,
        small_bytes=MIB,
        feed_entries=entries,
        rare_matches=len(rare_block_numbers(big_mb * MIB // _block_size())),
    )
    _ensure(dataset.small_log, {"small": MIB}, lambda: write_small_log(dataset.small_log, MIB), say)
    _ensure(dataset.big_log, {"big": dataset.big_bytes}, lambda: write_big_log(dataset.big_log, dataset.big_bytes), say)
    _ensure(dataset.feed, {"feed": entries}, lambda: write_feed(dataset.feed, entries), say)
    return dataset


@functools.lru_cache(maxsize=1)
def _block_size() -> int:
    """Size of the big log's repeated block (the template is deterministic)."""
    return len(_block_template())


def _ensure(path: Path, what: dict[str, object], make: Callable[[], object], say: Callable[[str], None]) -> None:
    manifest = path.with_name(path.name + ".manifest.json")
    wanted = {"generator": GENERATOR_VERSION, **what}
    if path.exists() and _manifest_ok(manifest, wanted):
        return
    say(f"generating {path} ...")
    make()
    manifest.write_text(json.dumps(wanted))


def dataset_summary(dataset: Dataset) -> dict[str, object]:
    return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(dataset).items()}
