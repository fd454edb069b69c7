"""Fixtures of the sandbox escape suite, and the results table in the terminal summary.

Session-wide: the static C programs (compiled once with gcc -static -O1),
the loopback listeners the network attempts aim at, a scratch directory with
the files the file attempts aim at (a handed-over log, an audit-log stand-in,
an allowlisted-but-not-handed log, a world-writable directory with a secret),
and a --profiles-dir copy of the shipped profiles with small limits ("tight").
Every attempt records (id, profile, expected, observed, verdict); the table is
printed at the end of every run that executed any, even with -q.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.sandbox.harness import PAYLOADS, Results, SandboxEnv
from tests.sandbox.listeners import Listeners

collect_ignore_glob = ["payloads/*"]  # payload files are run inside the sandbox, never imported

RESULTS = pytest.StashKey[Results]()
COMPILE_TIMEOUT_S = 180
PROGRAMS = {"attempt": "attempt.c", "hostile": "hostile.c"}
HANDED_TEXT = b"2024-05-01T00:00:00 handed-over log, first line\nsecond line\n"
TIGHT_PROFILES = ("grep", "journal")  # the profiles the escape attempts run under
TIGHT_EDITS = {
    "cpu_s = 20": "cpu_s = 1",
    "memory_bytes = 268435456": "memory_bytes = 67108864",
}


@pytest.fixture(scope="session", autouse=True)
def _sandbox_preconditions() -> None:
    if os.geteuid() != 0:
        pytest.skip("the escape suite runs the full layer set, which needs root")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the static attempt programs")


@pytest.fixture(scope="session")
def results(request: pytest.FixtureRequest) -> Results:
    stash = request.config.stash
    if RESULTS not in stash:
        stash[RESULTS] = Results()
    return stash[RESULTS]


def _compile(source: Path, target: Path) -> None:
    proc = subprocess.run(
        ["gcc", "-static", "-O1", "-Wall", "-o", str(target), str(source)],
        capture_output=True,
        timeout=COMPILE_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def _setuid_copy(program: Path, target: Path) -> Path:
    shutil.copy2(program, target)
    os.chown(target, 0, 0)
    os.chmod(target, 0o4755)
    return target


@pytest.fixture(scope="session")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    build = tmp_path_factory.mktemp("sandbox-build")
    built = {}
    for name, source in PROGRAMS.items():
        built[name] = build / name
        _compile(PAYLOADS / source, built[name])
    built["setuid"] = _setuid_copy(built["attempt"], build / "setuid-attempt")
    return built


def profiles_copy(target: Path, edits: dict[str, str], names: tuple[str, ...] = ("grep",)) -> Path:
    """The shipped profiles in `target`, with `edits` made to those of `names`."""
    shutil.copytree(ROOT / "sandbox_profiles", target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for name in names:
        profile = target / f"{name}.toml"
        text = profile.read_text()
        for old, new in edits.items():
            assert old in text, f"{old!r} is no longer in the shipped {name} profile"
            text = text.replace(old, new, 1)
        profile.write_text(text)
    return target


def _target_files(scratch: Path) -> dict[str, Path]:
    files = {
        "handed_log": scratch / "handed.log",
        "audit_log": scratch / "audit-standin.jsonl",
        "unhanded_log": scratch / "allowlisted-not-handed.log",
        "secret_dir": scratch / "secret-dir",
    }
    files["handed_log"].write_bytes(HANDED_TEXT)
    files["audit_log"].write_text('{"event": "begin", "note": "stand-in for the broker audit log"}\n')
    files["unhanded_log"].write_text("an allowlisted log that was not handed over\n")
    files["secret_dir"].mkdir()
    (files["secret_dir"] / "secret.txt").write_text("top secret\n")
    os.chmod(files["secret_dir"], 0o777)  # only the sandbox may stand in the way of a write
    for path in (files["handed_log"], files["audit_log"], files["unhanded_log"], files["secret_dir"] / "secret.txt"):
        os.chmod(path, 0o666)
    return files


@pytest.fixture(scope="session")
def listeners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listeners]:
    opened = Listeners(tmp_path_factory.mktemp("listen")).open()
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    """World-traversable, unlike pytest's 0700 base: file permissions must not be what stops an attempt."""
    directory = Path(tempfile.mkdtemp(prefix="bastion-escape-", dir="/tmp"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox_env(programs: dict[str, Path], listeners: Listeners, scratch: Path) -> SandboxEnv:
    values: dict[str, object] = {
        **listeners.values,
        "test_pid": os.getpid(),
        "up": "../" * 24,  # more than enough to climb from any tmp directory to the root
        "handed_head": HANDED_TEXT[:32].decode(),
    }
    return SandboxEnv(
        programs=programs,
        profile_dirs={"shipped": None, "tight": profiles_copy(scratch / "profiles-tight", TIGHT_EDITS, TIGHT_PROFILES)},
        paths=_target_files(scratch),
        values=values,
        scratch=scratch,
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, None)
    if results is None or not results.rows:
        return
    terminalreporter.section("sandbox escape attempts")
    for line in results.table():
        terminalreporter.write_line(line)
    counts: dict[str, int] = {}
    for row in results.rows:
        counts[row.verdict] = counts.get(row.verdict, 0) + 1
    summary = ", ".join(f"{count} {verdict}" for verdict, count in sorted(counts.items()))
    terminalreporter.write_line(f"{len(results.rows)} attempts: {summary}")
