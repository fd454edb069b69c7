"""StrictModes for logs: who besides root can change an allowlisted log; a warning by
default, a refusal to serve with [sandbox] strict_modes = true."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from broker.files import log_dir_modes
from broker.files.allowlist import Allowlist
from broker.files.log_dir_modes import Finding, find, report
from broker.policy import load_policy
from tests.conftest import BASTION, write_policy

WWW = 33  # www-data on Debian; any uid but root and ours will do
ADM = 4
WWW_NAME = log_dir_modes.describe_user(WWW)  # "uid 33 (www-data)" where that account exists

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another uid needs root")


def allowlist_for(tmp_path: Path, logs: list[object], toml: str = "") -> Allowlist:
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    return Allowlist(load_policy(write_policy(conf, logs, toml=toml)))  # type: ignore[arg-type]


def texts(tmp_path: Path, logs: list[object], trusted: frozenset[int] = frozenset({0})) -> list[str]:
    allowlist = allowlist_for(tmp_path, logs)
    try:
        return [finding.text for finding in find(allowlist, trusted)]
    finally:
        allowlist.close()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    (directory / "app.log").write_text("line\n")
    return directory


def test_root_owned_log_and_directories_raise_nothing(tmp_path: Path, logs: Path) -> None:
    """/tmp on the way is world-writable but sticky, and what lies below it is root's."""
    assert texts(tmp_path, [logs / "app.log", logs / "*.log"]) == []


def test_a_directory_owned_by_a_service_is_named_with_what_it_allows(tmp_path: Path, logs: Path) -> None:
    os.chown(logs, WWW, WWW)
    found = texts(tmp_path, [logs / "app.log"])
    assert len(found) == 1 and found[0].startswith(f"uid {WWW}")
    assert found[0].endswith(log_dir_modes.DIRECTORY.format(path=logs))


def test_the_file_itself_and_each_glob_member(tmp_path: Path, logs: Path) -> None:
    (logs / "other.log").write_text("x\n")
    os.chown(logs / "app.log", WWW, 0)
    os.chmod(logs / "other.log", 0o666)
    assert sorted(texts(tmp_path, [logs / "*.log"])) == [
        f"every user {log_dir_modes.FILE.format(path=logs / 'other.log')}",
        f"{WWW_NAME} {log_dir_modes.FILE.format(path=logs / 'app.log')}",
    ]


def test_group_write_names_the_group(tmp_path: Path, logs: Path) -> None:
    os.chown(logs, 0, ADM)
    os.chmod(logs, 0o775)
    (found,) = texts(tmp_path, [logs / "app.log"])
    assert found.startswith(f"group {ADM}")


def test_group_write_for_group_root_is_trusted(tmp_path: Path, logs: Path) -> None:
    os.chown(logs, 0, 0)
    os.chmod(logs, 0o775)
    assert texts(tmp_path, [logs / "app.log"]) == []


def test_a_writable_directory_above_decides_the_next_load(tmp_path: Path, logs: Path) -> None:
    os.chmod(tmp_path, 0o777)  # not sticky: anyone can rename logs/ away and put their own there
    (found,) = texts(tmp_path, [logs / "app.log"])
    assert found == f"every user {log_dir_modes.ANCESTOR.format(path=logs)}"


def test_a_sticky_directory_above_is_fine_only_while_root_owns_the_entry_below(tmp_path: Path, logs: Path) -> None:
    os.chmod(tmp_path, 0o1777)
    assert texts(tmp_path, [logs / "app.log"]) == []
    os.chown(logs, WWW, WWW)
    found = texts(tmp_path, [logs / "app.log"])
    assert f"every user {log_dir_modes.ANCESTOR.format(path=logs)}" in found


def test_the_brokers_own_uid_is_trusted_when_it_is_not_root(tmp_path: Path, logs: Path) -> None:
    os.chown(logs, WWW, WWW)
    assert texts(tmp_path, [logs / "app.log"], trusted=frozenset({0, WWW})) == []


def test_rotations_and_nested_glob_directories_are_checked(tmp_path: Path, logs: Path) -> None:
    (logs / "app.log.1").write_text("old\n")
    os.chown(logs / "app.log.1", WWW, WWW)
    host = tmp_path / "remote" / "web1"
    host.mkdir(parents=True)
    (host / "auth.log").write_text("x\n")
    os.chown(host, WWW, WWW)
    deep = tmp_path / "deep" / "a"
    (deep / "b").mkdir(parents=True)
    (deep / "b" / "x.log").write_text("x\n")
    os.chown(deep, WWW, WWW)  # one level above the file's own directory
    entries = [
        {"path": str(logs / "app.log"), "rotations": True},
        tmp_path / "remote" / "*" / "auth.log",
        tmp_path / "deep" / "*" / "*" / "x.log",
    ]
    assert sorted(texts(tmp_path, entries)) == sorted(
        [
            f"{WWW_NAME} {log_dir_modes.FILE.format(path=logs / 'app.log.1')}",
            f"{WWW_NAME} {log_dir_modes.DIRECTORY.format(path=host)}",
            f"{WWW_NAME} {log_dir_modes.DIRECTORY.format(path=deep)}",
        ]
    )


def test_report_names_each_log_and_bounds_its_lines() -> None:
    findings = [Finding("/a/*.log", f"t{n}") for n in range(log_dir_modes.SHOWN_PER_LOG + 3)] + [Finding("/b.log", "u")]
    lines = report(findings)
    assert lines[0] == "/a/*.log: t0" and lines[-1] == "/b.log: u"
    assert lines[-2] == "/a/*.log: ... and 3 more" and len(lines) == log_dir_modes.SHOWN_PER_LOG + 2


def run_bastion(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run([str(BASTION), *args], capture_output=True, timeout=120, input=b"", env=env)


@pytest.mark.parametrize("strict", [False, True])
def test_serve_warns_by_default_and_refuses_with_strict_modes(tmp_path: Path, logs: Path, strict: bool) -> None:
    os.chown(logs, WWW, WWW)
    policy = write_policy(tmp_path, [logs / "app.log"], toml="[sandbox]\nstrict_modes = true\n" if strict else "")
    served = run_bastion(["serve", "--policy", str(policy)])  # stdin at EOF: serves, then stops
    stderr = served.stderr.decode()
    line = f"allowlisted log: {logs / 'app.log'}: {WWW_NAME} {log_dir_modes.DIRECTORY.format(path=logs)}"
    assert served.stdout == b""
    if strict:
        assert served.returncode == 3, stderr
        assert f"refusing to serve: {line} ([sandbox] strict_modes = true refuses" in stderr
        assert "serving stdio" not in stderr
    else:
        assert served.returncode == 0, stderr
        assert (
            f"WARNING {line} (a warning; [sandbox] strict_modes = true would refuse)" in stderr
            and "serving stdio" in stderr
        )


@pytest.mark.parametrize("strict", [False, True])
def test_doctor_names_the_log_and_says_what_serve_would_do(tmp_path: Path, logs: Path, strict: bool) -> None:
    os.chown(logs, WWW, WWW)
    policy = write_policy(tmp_path, [logs / "app.log"], toml="[sandbox]\nstrict_modes = true\n" if strict else "")
    doctor = run_bastion(["doctor", "--policy", str(policy)])
    stdout = doctor.stdout.decode()
    assert f"allowlisted log: {logs / 'app.log'}: {WWW_NAME} can replace files in {logs}" in stdout
    if strict:
        assert doctor.returncode == 3, stdout
        assert "  REFUSES allowlisted log:" in stdout
        assert "verdict: a policy check failed (REFUSES above); `bastion serve` would refuse to start" in stdout
    else:
        assert doctor.returncode == 0, stdout
        assert "  warning allowlisted log:" in stdout and "strict_modes = true would refuse" in stdout


def test_doctor_with_clean_logs(tmp_path: Path, logs: Path) -> None:
    doctor = run_bastion(["doctor", "--policy", str(write_policy(tmp_path, [logs / "app.log"]))])
    assert doctor.returncode == 0 and "allowlisted log:" not in doctor.stdout.decode()
