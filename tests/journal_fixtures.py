"""Journal files for the tests, written by the real systemd-journal-remote.

Entries are described as Python values, serialised to the Journal Export Format
(https://systemd.io/JOURNAL_EXPORT_FORMATS/: `FIELD=value` lines, an empty line
between entries, the binary-safe length-prefixed form for values with a newline or
bytes that are not text; the example's serialiser, examples/generate_journal.py) and
fed to `systemd-journal-remote`, which writes the journal files exactly as on a real
collector. Nothing here writes the journal format itself.

- `write_journal`: one file from one export stream (`--output=FILE.journal -`).
- `build_collector`: one file per host, laid out by the tool's own `--split-mode=host`
  while it receives each host's stream on loopback (`--listen-raw`, on a socket this
  module binds and hands over as sd_listen_fds descriptor 3), from a distinct
  127.77.X.Y source address; the tool names each file after that peer's address and
  port, `remote-127.77.X.Y:19530.journal`, as it does for a sender whose name it cannot
  look up.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, load_script

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
BASE_USEC = 1_764_633_600_000_000  # 2025-12-02T00:00:00Z
STEP_USEC = 1_000_003  # about a second, odd so that no two hosts' entries share a time
RUN_TIMEOUT_S = 60
SOCKET_TIMEOUT_S = 30
# Hosts send from 127.77.X.Y: the tool names a file after its peer's address, or its
# name if NSS resolves it (127.0.0.1 becomes "localhost"), and no hosts file names these.
MAX_HOSTS = 64 * 250
# ... and its port: every host sends from this one, so the names are known in advance.
SOURCE_PORT = 19530


SAMPLE_JOURNAL = load_script("generate_journal", ROOT / "examples" / "generate_journal.py")
_UNITS = {"sshd": "ssh.service", "CRON": "cron.service", "sudo": None, "kernel": None, "nginx": "nginx.service"}


@dataclass(frozen=True)
class Entry:
    """One journal entry, with the fields the reader looks at (and any others in `extra`)."""

    realtime_usec: int
    message: str | bytes
    hostname: str
    identifier: str
    priority: int
    pid: int | None
    boot_id: str
    monotonic_usec: int
    unit: str | None = None
    extra: Mapping[str, str | bytes] = field(default_factory=dict)

    def fields(self) -> dict[str, bytes]:
        values: dict[str, str | bytes] = {
            "__REALTIME_TIMESTAMP": str(self.realtime_usec),
            "__MONOTONIC_TIMESTAMP": str(self.monotonic_usec),
            "_BOOT_ID": self.boot_id,
            "_HOSTNAME": self.hostname,
            "SYSLOG_IDENTIFIER": self.identifier,
            "PRIORITY": str(self.priority),
            "MESSAGE": self.message,
        }
        if self.pid is not None:
            values["_PID"] = str(self.pid)
        if self.unit is not None:
            values["_SYSTEMD_UNIT"] = self.unit
        values.update(self.extra)
        return {name: value.encode() if isinstance(value, str) else value for name, value in values.items()}


def export_stream(entries: Iterable[Entry]) -> bytes:
    """The entries in the Journal Export Format, each followed by an empty line (the
    example's serialiser, examples/generate_journal.py, so that both feed the tool alike)."""
    return SAMPLE_JOURNAL.export_entries(entry.fields() for entry in entries)


def boot_id(host_index: int, boot: int = 0) -> str:
    return f"{host_index:08x}{boot:08x}" + "b0" * 8


def host_entries(hostname: str, host_index: int, count: int, hosts: int = 1, boots: int = 1) -> list[Entry]:
    """`count` entries of a plausible host: sshd failures (some from invalid users), an
    accepted login, cron, sudo, kernel and nginx lines, a multi-line message and one that
    is not UTF-8; priorities 2..7 and `boots` boots. Times are in order and never equal to
    another host's of the same `hosts`, so the merged order of many files is unique."""
    entries = []
    per_boot = max(1, -(-count // boots))
    for n in range(count):
        realtime = BASE_USEC + (n * hosts + host_index) * STEP_USEC
        boot = min(n // per_boot, boots - 1)
        identifier, priority, message = _line(n, host_index)
        entries.append(
            Entry(
                realtime_usec=realtime,
                monotonic_usec=1_000_000 + (n - boot * per_boot) * STEP_USEC,
                boot_id=boot_id(host_index, boot),
                hostname=hostname,
                identifier=identifier,
                priority=priority,
                pid=None if identifier == "kernel" else 1000 + n % 7,
                unit=_UNITS[identifier],
                message=message,
            )
        )
    return entries


def _line(n: int, host_index: int) -> tuple[str, int, str | bytes]:
    octet = 1 + (n * 7 + host_index) % 250
    kind = n % 10
    if kind in (0, 3, 6):
        user = ("admin", "oracle", "test")[n % 3]
        return "sshd", 6, f"Failed password for invalid user {user} from 203.0.113.{octet} port {40000 + n} ssh2"
    if kind == 1:
        return "sshd", 6, f"Failed password for root from 198.51.100.{octet} port {50000 + n} ssh2"
    if kind == 2:
        return "sshd", 6, f"Accepted publickey for deploy from 192.0.2.{octet} port {60000 + n} ssh2"
    if kind == 4:
        return "CRON", 6, f"(root) CMD (run-parts /etc/cron.hourly) #{n}"
    if kind == 5:
        return "sudo", 5, f"deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/true #{n}"
    if kind == 7:
        return "kernel", 3, f"Out of memory: Killed process {2000 + n} (java)\nsecond line of the report"
    if kind == 8:
        return "nginx", 4, b"upstream timed out \xff\xfe (not UTF-8) #" + str(n).encode()
    return "kernel", 2, f"EXT4-fs error (device vda1): htree_dirblock_to_tree #{n}"


def write_journal(path: Path, entries: Sequence[Entry]) -> Path:
    """One journal file at `path` (its name must end in .journal) holding `entries`."""
    done = subprocess.run(
        [str(JOURNAL_REMOTE), f"--output={path}", "-"],
        input=export_stream(entries),
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
    )
    _check_written(done.returncode, done.stderr, len(entries))
    return path


def _check_written(returncode: int, stderr: bytes, expected: int) -> None:
    found = re.search(rb"Finishing after writing (\d+) entries", stderr)
    if returncode != 0 or found is None or int(found.group(1)) != expected:
        raise RuntimeError(f"systemd-journal-remote wrote {found and found.group(1)!r} of {expected}: {stderr!r}")


def host_address(host_index: int) -> str:
    return f"127.77.{host_index // 250}.{host_index % 250 + 1}"


def collector_file(directory: Path, host_index: int) -> Path:
    """Where `--split-mode=host` puts the file of the host sending from host_address()."""
    return directory / f"remote-{host_address(host_index)}:{SOURCE_PORT}.journal"


def build_collector(directory: Path, hosts: int, entries_per_host: int) -> list[Path]:
    """A collector directory written by the real tool: one file per host, host i sending
    host_entries(f"host-{i:03d}", i, ...) from host_address(i). Returns the files in host order."""
    if not 0 < hosts <= MAX_HOSTS:
        raise ValueError(f"1..{MAX_HOSTS} hosts")
    with Collector(directory) as collector:
        for index in range(hosts):
            collector.send(index, host_entries(f"host-{index:03d}", index, entries_per_host, hosts))
    files = [collector_file(directory, index) for index in range(hosts)]
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise RuntimeError(f"systemd-journal-remote wrote no file for {missing[:3]}")
    return files


class Collector:
    """A running `systemd-journal-remote --split-mode=host` writing into `directory`,
    receiving uploads on loopback. Until it is left, its files are open for writing
    ("online"); on leaving it is stopped, closes them, and must have written every entry sent."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sent = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Collector:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._server = _start_collector(self.directory, self._listener)
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        if self._server is None:
            return
        self._server.terminate()
        _out, stderr = self._server.communicate(timeout=RUN_TIMEOUT_S)
        if exc[0] is None:
            _check_written(self._server.returncode, stderr, self.sent)

    def connect(self, host_index: int) -> socket.socket:
        """An upload connection from host_address(host_index)."""
        if self._server is None or self._server.poll() is not None:
            raise RuntimeError("systemd-journal-remote is not running")
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.settimeout(SOCKET_TIMEOUT_S)
        # The port stays in TIME_WAIT after a build (this side closes first): reuse it.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        conn.bind((host_address(host_index), SOURCE_PORT))
        conn.connect(self._listener.getsockname())
        return conn

    def upload(self, conn: socket.socket, entries: Sequence[Entry]) -> None:
        conn.sendall(export_stream(entries))
        self.sent += len(entries)

    def send(self, host_index: int, entries: Sequence[Entry]) -> None:
        """One host's whole upload, written once this returns."""
        with self.connect(host_index) as conn:
            self.upload(conn, entries)
            finish(conn)


def finish(conn: socket.socket) -> None:
    """End an upload and wait for the tool to close the connection, which it does once it
    has read, and written, every entry of the stream."""
    conn.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + SOCKET_TIMEOUT_S
    while conn.recv(4096):
        if time.monotonic() > deadline:
            raise TimeoutError("systemd-journal-remote kept the connection open")


def _start_collector(directory: Path, listener: socket.socket) -> subprocess.Popen[bytes]:
    # sd_listen_fds() wants the socket as descriptor 3 and LISTEN_PID to be the tool's
    # own pid: a small Python moves it there (inheritable) and execs the tool, keeping its pid.
    # In an empty network namespace: the tool looks up its peers' names (getnameinfo), and
    # there that fails at once, instead of asking the host's DNS server about 127.77.X.Y.
    command = [str(JOURNAL_REMOTE), "--split-mode=host", f"--output={directory}"]
    isolate = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--net"]
    return subprocess.Popen(
        [*isolate, sys.executable, "-c", _AS_LISTEN_FD_3, str(listener.fileno()), *command],
        pass_fds=[listener.fileno()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SYSTEMD_LOG_LEVEL": "info"},
    )


_AS_LISTEN_FD_3 = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.fixture(scope="module")
def journal_web(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One host's journal file: 120 entries over three boots."""
    path = tmp_path_factory.mktemp("journal") / "web.journal"
    return write_journal(path, host_entries("web1", 0, 120, boots=3))


@pytest.fixture(scope="module")
def journal_trio(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three hosts, a journal file each, their entries interleaved in time."""
    directory = tmp_path_factory.mktemp("trio")
    return [write_journal(directory / f"h{i}.journal", host_entries(f"host-{i:03d}", i, 40, hosts=3)) for i in range(3)]
