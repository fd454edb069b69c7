"""Warnings reach journald at priority 4, errors at 3 (broker/cli/stderr_log.py).

The real test starts the host's systemd-journald in a private mount namespace (its
sockets and journal files on tmpfs mounts nobody else sees), connects a stream to it
as systemd does for a service's stderr, runs `bastion serve` on it and reads the
entries back with journalctl. The unit tests check the prefix and when it is used."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broker.cli.stderr_log import JournalFormatter, stderr_is_journal, syslog_priority
from tests.conftest import BASTION, SAMPLE_LOGS, write_policy

JOURNALD = Path("/lib/systemd/systemd-journald")


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6), (logging.DEBUG, 7)],
)
def test_levels_map_to_syslog_priorities(level: int, priority: int) -> None:
    assert syslog_priority(level) == priority


def test_every_line_of_a_record_carries_the_prefix() -> None:
    record = logging.LogRecord("bastion", logging.WARNING, __file__, 1, "first\nsecond", None, None)
    assert JournalFormatter("%(message)s").format(record) == "<4>first\n<4>second"


def test_the_prefix_is_used_only_when_stderr_is_the_named_stream(tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        info = os.fstat(stream.fileno())
        named = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert stderr_is_journal(named, stream.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"}, stream.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, stream.fileno())
        assert not stderr_is_journal({}, stream.fileno())


def test_a_terminal_or_file_gets_plain_lines(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, [SAMPLE_LOGS / "auth.log", tmp_path / "gone.log"])
    env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
    done = subprocess.run(
        [str(BASTION), "serve", "--policy", str(policy)], input="", capture_output=True, text=True, timeout=60, env=env
    )
    assert "bastion: WARNING " in done.stderr and "<4>" not in done.stderr, done.stderr


# Runs inside `unshare -m`: journald on private tmpfs mounts, bastion's stderr a stream to it.
INSIDE = r"""
import json, os, socket, subprocess, sys, time
for directory in ("/run/systemd/journal", "/run/log/journal", "/var/log/journal"):
    os.makedirs(directory, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", directory], check=True)
journald = subprocess.Popen([sys.argv[1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        if os.path.exists("/run/systemd/journal/stdout"):
            break
        time.sleep(0.05)
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.connect("/run/systemd/journal/stdout")
    # identifier, unit, default priority, level prefix on, no syslog/kmsg/console forwarding
    stream.sendall(b"bastion\n\n6\n1\n0\n0\n0\n")
    info = os.fstat(stream.fileno())
    env = dict(os.environ, JOURNAL_STREAM=f"{info.st_dev}:{info.st_ino}")
    subprocess.run([sys.argv[2], "serve", "--policy", sys.argv[3]], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=stream.fileno(), env=env, timeout=60)
    stream.close()
    for _ in range(100):  # journald reads the stream asynchronously
        out = subprocess.run(["journalctl", "-D", "/run/log/journal", "-o", "json", "--no-pager",
                              "SYSLOG_IDENTIFIER=bastion"], capture_output=True, text=True).stdout
        if "stopped; audit log head" in out:
            break
        time.sleep(0.05)
    print(out)
finally:
    journald.terminate()
    journald.wait(10)
"""


@pytest.mark.skipif(os.geteuid() != 0 or not JOURNALD.exists(), reason="needs root and systemd-journald")
def test_a_real_journald_stores_warnings_at_priority_4(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or shutil.which("journalctl") is None:
        pytest.skip("needs unshare and journalctl")
    policy = write_policy(tmp_path, [SAMPLE_LOGS / "auth.log", tmp_path / "gone.log"])
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", INSIDE, str(JOURNALD)]
        + [str(BASTION), str(policy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    by_priority = {(entry["PRIORITY"], entry["MESSAGE"].split(" ", 2)[1]) for entry in entries}
    assert ("4", "WARNING") in by_priority, entries
    assert ("6", "INFO") in by_priority, entries
    assert all(not entry["MESSAGE"].startswith("<") for entry in entries)  # journald took the prefix off
    warning = next(entry for entry in entries if entry["PRIORITY"] == "4")
    assert "gone.log" in warning["MESSAGE"]
