"""Directories for what Bastion writes: only the state directory is ever created, and a
file in the way is called "not a directory" (broker/files/output_dir.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from broker.audit.log import AuditError, AuditLog
from broker.files.output_dir import OutputDirError, directory_problem, prepare_directory
from tests.conftest import BASTION, SAMPLE_LOGS


def test_an_existing_directory_is_used_as_it_is(tmp_path: Path) -> None:
    assert directory_problem(str(tmp_path / "audit.jsonl"), None) == ""
    prepare_directory(str(tmp_path / "audit.jsonl"), None)


def test_a_missing_directory_outside_the_state_directory_is_named_not_created(tmp_path: Path) -> None:
    path = tmp_path / "lgo" / "bastion" / "audit.jsonl"
    with pytest.raises(OutputDirError, match=rf"directory {tmp_path}/lgo does not exist: create it"):
        prepare_directory(str(path), str(tmp_path / "state"))
    assert not (tmp_path / "lgo").exists()


def test_the_state_directory_is_created_with_its_parents(tmp_path: Path) -> None:
    state = tmp_path / "home" / ".local" / "state" / "bastion"
    prepare_directory(str(state / "audit.jsonl"), str(state))
    assert state.is_dir()
    prepare_directory(str(state / "sub" / "intel.db"), str(state))  # below it too
    assert (state / "sub").is_dir()


def test_a_path_that_only_starts_like_the_state_directory_is_outside_it(tmp_path: Path) -> None:
    with pytest.raises(OutputDirError, match="does not exist"):
        prepare_directory(str(tmp_path / "state-typo" / "audit.jsonl"), str(tmp_path / "state"))


@pytest.mark.parametrize("depth", [0, 2])
def test_a_file_in_the_way_is_not_a_directory(tmp_path: Path, depth: int) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = blocker.joinpath(*["d"] * depth, "audit.jsonl")
    assert directory_problem(str(path), str(tmp_path)) == f"{blocker} is not a directory"
    with pytest.raises(OutputDirError, match="is not a directory"):
        prepare_directory(str(path), str(blocker))  # even "inside" the state directory


def test_the_audit_log_says_which_directory_is_missing(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match=r"cannot open audit log .*: directory .*/typo does not exist"):
        AuditLog(str(tmp_path / "typo" / "audit.jsonl"))
    with pytest.raises(AuditError, match=r"cannot open audit log .*: .*/file is not a directory"):
        (tmp_path / "file").write_text("x")
        AuditLog(str(tmp_path / "file" / "audit.jsonl"))


FEED = "203.0.113.0/24\n"


def _intel_policy(tmp_path: Path, database: str) -> Path:
    (tmp_path / "feed.netset").write_text(FEED)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[logs]]\npath = "{SAMPLE_LOGS / "auth.log"}"\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
        f'[intel]\ndatabase = "{database}"\n'
        f'[[intel.feeds]]\nname = "f"\npath = "{tmp_path / "feed.netset"}"\nformat = "netset"\n'
        'category = "test"\nconfidence = 50\n'
    )
    return policy


def _compile(policy: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BASTION), "intel", "compile", "--policy", str(policy), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_intel_compile_creates_a_fresh_state_directory(tmp_path: Path) -> None:
    policy = _intel_policy(tmp_path, "${state}/intel.db")
    done = _compile(policy, "--state-dir", str(tmp_path / "fresh" / "var"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fresh" / "var" / "intel.db").is_file()


def test_intel_compile_refuses_a_mistyped_directory(tmp_path: Path) -> None:
    policy = _intel_policy(tmp_path, str(tmp_path / "vra" / "lib" / "intel.db"))
    done = _compile(policy)
    assert done.returncode == 2
    assert f"directory {tmp_path}/vra does not exist: create it, or correct the path" in done.stderr
    assert not (tmp_path / "vra").exists()
