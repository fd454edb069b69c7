"""`bastion doctor` and `bastion serve` agree on whether a policy can be served,
because both run broker/cli/preflight.py: a table of broken policies, each run through
both commands, plus the fixes doctor prints for layers it cannot apply."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sandbox_profiles
from broker.cli.preflight import layer_fix
from tests.conftest import BASTION, SAMPLE_LOGS, write_policy

AUTH = SAMPLE_LOGS / "auth.log"
Setup = Callable[[Path], tuple[Path, list[str]]]  # -> (policy, extra serve/doctor arguments)


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    # stdin is an empty pipe: a serve that starts stops again at its end.
    return subprocess.run([str(BASTION), *args], input="", capture_output=True, text=True, timeout=120)


def plain(tmp_path: Path) -> tuple[Path, list[str]]:
    return write_policy(tmp_path, [AUTH]), []


def audit_dir_missing(tmp_path: Path) -> tuple[Path, list[str]]:
    """A mistyped directory is named, not created (broker/files/output_dir.py)."""
    return write_policy(tmp_path, [AUTH], tmp_path / "not" / "yet" / "audit.jsonl"), []


def state_dir_missing(tmp_path: Path) -> tuple[Path, list[str]]:
    """The state directory is the one directory created when missing, parents included."""
    policy = tmp_path / "state-policy.toml"
    policy.write_text(f'[[logs]]\npath = "{AUTH}"\n[audit]\npath = "${{state}}/audit.jsonl"\n')
    return policy, ["--state-dir", str(tmp_path / "fresh" / "state")]


def audit_is_a_directory(tmp_path: Path) -> tuple[Path, list[str]]:
    (tmp_path / "dir").mkdir()
    return write_policy(tmp_path, [AUTH], tmp_path / "dir"), []


def audit_under_a_file(tmp_path: Path) -> tuple[Path, list[str]]:
    (tmp_path / "file").write_text("x")
    return write_policy(tmp_path, [AUTH], tmp_path / "file" / "audit.jsonl"), []


def audit_is_a_symlink(tmp_path: Path) -> tuple[Path, list[str]]:
    (tmp_path / "real.jsonl").touch()
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "real.jsonl")
    return write_policy(tmp_path, [AUTH], tmp_path / "link.jsonl"), []


def audit_torn(tmp_path: Path) -> tuple[Path, list[str]]:
    (tmp_path / "audit.jsonl").write_text('{"seq": 1, "event": "server_st')
    return write_policy(tmp_path, [AUTH]), []


def audit_unwritable(tmp_path: Path) -> tuple[Path, list[str]]:
    audit = tmp_path / "audit.jsonl"
    audit.touch()
    if os.geteuid() == 0:  # root ignores modes; an immutable file refuses it too
        if subprocess.run(["chattr", "+i", str(audit)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not supported on this filesystem")
    else:
        audit.chmod(0o400)
    return write_policy(tmp_path, [AUTH], audit), []


HELD: list[int] = []  # descriptors holding an audit log's lock until the test ends


def audit_locked(tmp_path: Path) -> tuple[Path, list[str]]:
    fd = os.open(tmp_path / "audit.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a stuck process would (a server holds it for one append only)
    HELD.append(fd)
    return write_policy(tmp_path, [AUTH]), []


def intel_db_missing(tmp_path: Path) -> tuple[Path, list[str]]:
    intel = f'[intel]\ndatabase = "{tmp_path / "intel.db"}"\nasn_mmdb = "{tmp_path / "none.mmdb"}"\n'
    return write_policy(tmp_path, [AUTH], toml=intel), []


def engine_missing(tmp_path: Path) -> tuple[Path, list[str]]:
    profiles = tmp_path / "profiles"
    shutil.copytree(
        Path(sandbox_profiles.__file__).parent, profiles, ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    grep = profiles / "grep.toml"
    grep.write_text(
        grep.read_text().replace('optional_executables = ["/usr/bin/rg"]', 'optional_executables = ["/nonexistent/rg"]')
    )
    return write_policy(tmp_path, [AUTH], toml='[search]\nengine = "rg"\n'), ["--profiles-dir", str(profiles)]


def log_missing(tmp_path: Path) -> tuple[Path, list[str]]:
    return write_policy(tmp_path, [AUTH, tmp_path / "gone.log", {"path": str(tmp_path / "none-*.log")}]), []


# (setup, serves, what both must say)
CASES: list[tuple[Setup, bool, str]] = [
    (plain, True, ""),
    (audit_dir_missing, False, "/not does not exist: create it, or correct the path"),
    (state_dir_missing, True, ""),
    (audit_is_a_directory, False, "audit"),
    (audit_under_a_file, False, "/file is not a directory"),
    (audit_is_a_symlink, False, "audit"),
    (audit_torn, False, "incomplete record"),
    (audit_unwritable, False, "audit"),
    (audit_locked, False, "has held its lock for over 2 s"),
    (intel_db_missing, True, "intel compile"),
    (engine_missing, False, "ripgrep is not installed"),
    (log_missing, True, "gone.log does not exist"),
]


@pytest.fixture
def unfreeze(tmp_path: Path) -> Iterator[None]:
    yield
    while HELD:
        os.close(HELD.pop())
    if os.geteuid() == 0 and (tmp_path / "audit.jsonl").exists():
        subprocess.run(["chattr", "-i", str(tmp_path / "audit.jsonl")], capture_output=True)


@pytest.mark.parametrize(("setup", "serves", "said"), CASES, ids=[case[0].__name__ for case in CASES])
def test_doctor_and_serve_agree(tmp_path: Path, unfreeze: None, setup: Setup, serves: bool, said: str) -> None:
    policy, extra = setup(tmp_path)
    doctor = bastion("doctor", "--policy", str(policy), *extra)
    served = bastion("serve", "--policy", str(policy), *extra)
    assert (doctor.returncode == 0) == (served.returncode == 0) == serves, doctor.stdout + doctor.stderr + served.stderr
    assert served.returncode in (0, 3) and served.stdout == ""
    if said:
        assert said in doctor.stdout and said in served.stderr, doctor.stdout + served.stderr
    if not serves:
        assert "a policy check failed" in doctor.stdout and "refusing to serve" in served.stderr


def test_doctor_checks_the_policy_it_is_given_with_its_state_dir(tmp_path: Path) -> None:
    text = f'[[logs]]\npath = "{AUTH}"\n[audit]\npath = "${{state}}/audit.jsonl"\n'
    (tmp_path / "policy.toml").write_text(text)
    (tmp_path / "state").write_text("a file where the state directory should be")
    doctor = bastion("doctor", "--policy", str(tmp_path / "policy.toml"), "--state-dir", str(tmp_path / "state"))
    assert doctor.returncode == 3 and f"{tmp_path / 'state'} is not a directory" in doctor.stdout


@pytest.mark.parametrize(
    ("layer", "reason", "root", "fix"),
    [
        (
            "cgroup",
            "worker cgroups need root",
            False,
            'add `best_effort = ["cgroup"]` to [sandbox] (workers then run without it), or run as root',
        ),
        ("seccomp", "no libseccomp Python binding could be loaded", True, "pyseccomp"),
        ("seccomp", "seccomp.allow: unknown syscall 'x'", True, "correct the profile"),
        ("landlock", "Landlock is not supported", True, "lsm="),
        ("namespaces", "clone(pid, user): Operation not permitted", False, "unprivileged_userns_clone"),
    ],
)
def test_every_missing_layer_comes_with_a_fix(layer: str, reason: str, root: bool, fix: str) -> None:
    assert fix in layer_fix(layer, reason, root)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's own are root-only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to serve as an unprivileged user")
    path = Path(tempfile.mkdtemp(prefix="bastion-preflight-"))
    os.chown(path, 65534, 65534)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_start_up_line_counts_only_the_layers_applied(scratch: Path) -> None:
    """A non-root broker skips the cgroup layer (best-effort): 11 of 12, not "12 layers"."""
    rootless = Path(__file__).resolve().parent.parent / ".venv-rootless" / "bin" / "bastion"
    if not rootless.exists():
        pytest.skip(".venv-rootless is missing (make test creates it as root)")
    tmp_path = scratch
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[logs]]\npath = "{AUTH}"\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
        '[sandbox]\nbest_effort = ["cgroup"]\n'
    )
    command = [
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "env",
        "-i",
        f"HOME={tmp_path}",
        "PATH=/usr/bin:/bin",
        str(rootless),
        "serve",
        "--policy",
        str(policy),
    ]
    served = subprocess.run(command, input="", capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    assert "11 of 12 sandbox layers applied per worker" in served.stderr
    assert "WITHOUT best-effort layers: skipped:cgroup" in served.stderr
