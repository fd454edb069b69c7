"""What workers/journal_reader.py needs from a worker's seccomp filter, measured on the real
filter: the grep profile's allowlist (sandbox_profiles/grep.toml, compiled as the broker
compiles it, applied as a worker applies it, after grep's rlimits and a Landlock ruleset
that lets no path be read) kills a reader of journal files, and the same allowlist plus
`fstatfs` (the library asks whether each file is on a network filesystem) reads them,
provided libsystemd was loaded before (loading it opens the libraries and runs libcap's
constructor, which probes prctl(PR_CAPBSET_READ)). Reading needs no path: only the
descriptors, which the library maps.

The shipped `journal` profile (sandbox_profiles/journal.toml) is that list: it reads too."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from broker.sandbox.profile import load_profile
from broker.sandbox.seccomp_compile import compile_filter
from tests import journal_fixtures as fixtures
from tests.conftest import ROOT
from workers.confine import landlock
from workers.confine.landlock import SCOPES_ABI

pytestmark = [
    pytest.mark.skipif(not fixtures.JOURNAL_REMOTE.exists(), reason="needs systemd-journal-remote"),
    pytest.mark.skipif(landlock.abi_version() < SCOPES_ABI, reason="needs Landlock with scopes"),
]

CHILD = """
import os, sys
import msgspec
from bastion_wire.plan import Rlimits
from workers import journal_reader
from workers.confine import landlock, no_new_privs, rlimits, seccomp

if sys.argv[2] == "load-first":
    journal_reader.library()
fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in sys.argv[4:]]
with open(sys.argv[1], "rb") as file:
    bpf = file.read()
rlimits.apply(msgspec.json.decode(sys.argv[3], type=Rlimits))
no_new_privs.apply()
landlock.apply([], [], ["abstract_unix_socket", "signal"])  # no path readable at all
seccomp.apply(bpf)
os.write(1, b"filtered\\n")
with journal_reader.JournalReader(fds) as reader:
    wanted = journal_reader.Filters(identifiers=("sshd", "kernel"), max_priority=6)
    newest = sum(1 for _ in reader.entries(wanted, order="newest", limit=10**6))
    every = [entry for entry in reader.entries(journal_reader.Filters(), limit=10**6)]
    notes = reader.notes()
longest = max(len(entry.fields["MESSAGE"]) for entry in every)
os.write(1, f"{newest} {len(every)} {longest} {len(notes)}\\n".encode())
os._exit(0)  # no interpreter shutdown under the filter: only the reading is measured
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two hosts' files, one with long (compressed) messages, and a file that is not a journal."""
    directory = tmp_path_factory.mktemp("seccomp")
    long = [
        dataclasses.replace(entry, message="x" * 20000 + str(n)) if n % 4 == 0 else entry
        for n, entry in enumerate(fixtures.host_entries("web1", 0, 40, hosts=2))
    ]
    bad = directory / "bad.journal"
    bad.write_bytes(b"LPKSHHRH" + bytes(500))
    return [
        fixtures.write_journal(directory / "a.journal", long),
        fixtures.write_journal(directory / "b.journal", fixtures.host_entries("db1", 1, 40, hosts=2)),
        bad,
    ]


def _run(
    tmp_path: Path, files: list[Path], extra: list[str], order: str, kind: str = "grep"
) -> subprocess.CompletedProcess[str]:
    profile = load_profile(kind)
    rules = msgspec.structs.replace(profile.seccomp, allow=[*profile.seccomp.allow, *extra])
    bpf = tmp_path / "filter.bpf"
    bpf.write_bytes(compile_filter(rules))
    limits = msgspec.json.encode(profile.rlimits).decode()
    command = [sys.executable, "-c", CHILD, str(bpf), order, limits, *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_the_grep_allowlist_kills_a_journal_reader(tmp_path: Path, files: list[Path]) -> None:
    done = _run(tmp_path, files, [], "load-first")
    assert done.stdout == "filtered\n" and done.returncode == -signal.SIGSYS


def test_with_fstatfs_added_it_reads_everything(tmp_path: Path, files: list[Path]) -> None:
    done = _run(tmp_path, files, ["fstatfs"], "load-first")
    # 56 sshd/kernel entries of 80, all 80 read, a long (compressed) message cut at 16 KiB,
    # one note (bad.journal)
    assert (done.returncode, done.stdout) == (0, "filtered\n56 80 16384 1\n"), done.stderr


def test_the_shipped_journal_profile_reads_everything(tmp_path: Path, files: list[Path]) -> None:
    # sandbox_profiles/journal.toml: grep's list plus fstatfs, under its own rlimits.
    done = _run(tmp_path, files, [], "load-first", kind="journal")
    assert (done.returncode, done.stdout) == (0, "filtered\n56 80 16384 1\n"), done.stderr


def test_loading_the_library_once_confined_fails(tmp_path: Path, files: list[Path]) -> None:
    # Landlock refuses the library's files; without it, seccomp kills libcap's prctl probe.
    done = _run(tmp_path, files, ["fstatfs"], "load-late")
    assert done.stdout == "filtered\n" and done.returncode == 1
    assert "OSError: libsystemd.so.0: cannot open shared object file" in done.stderr
