"""Non-root mode: the end-to-end tests (and the worker-death and planted-file
faults) again, with the broker running as uid 65534.

A non-root broker confines workers inside a user namespace (its own uid is
mapped to 65534 inside); it cannot create cgroups, so the policy downgrades
that one layer explicitly, and every other layer must still apply. The run
uses `.venv-rootless` (Debian's /usr/bin/python3, which an unprivileged user
can execute; `make test` creates it), because the main venv's interpreter may
live somewhere only root can read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

ROOTLESS_PYTHON = ROOT / ".venv-rootless" / "bin" / "python"
UNPRIVILEGED = "65534"


def _userns_allowed() -> tuple[bool, str]:
    probe = [
        "setpriv",
        "--reuid",
        UNPRIVILEGED,
        "--regid",
        UNPRIVILEGED,
        "--clear-groups",
        "unshare",
        "-U",
        "-m",
        "-n",
        "true",
    ]
    proc = subprocess.run(probe, capture_output=True, timeout=30, cwd="/")
    return proc.returncode == 0, proc.stderr.decode(errors="replace").strip()


def _preconditions() -> None:
    if os.geteuid() != 0:
        pytest.skip("already not root: the whole suite is the non-root run")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is required for the non-root run")
    if not ROOTLESS_PYTHON.exists():
        pytest.fail(f"{ROOTLESS_PYTHON.relative_to(ROOT)} is missing: run `make test`, which creates it")
    allowed, why = _userns_allowed()
    if not allowed:
        pytest.skip(
            f"this host forbids unprivileged user namespaces ({why})"
            "; `bastion doctor` run as a user lists the layers that remain"
        )


def _scratch_dir() -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="bastion-rootless-"))
    os.chown(scratch, int(UNPRIVILEGED), int(UNPRIVILEGED))
    return scratch


def test_end_to_end_suite_passes_as_an_unprivileged_user() -> None:
    _preconditions()
    scratch = _scratch_dir()
    try:
        command = [
            "setpriv",
            "--reuid",
            UNPRIVILEGED,
            "--regid",
            UNPRIVILEGED,
            "--clear-groups",
            "env",
            "-i",
            f"HOME={scratch}",
            f"TMPDIR={scratch}",
            f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}",
            "BASTION_TEST_BEST_EFFORT=cgroup",
            str(ROOTLESS_PYTHON),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(scratch / "pytest"),
            "tests/test_e2e_stdio.py",
            "tests/test_symlink_attacks.py",
            "tests/test_worker_death.py",
            "tests/test_planted_files.py",
            "tests/test_client_gone.py",
        ]
        proc = subprocess.run(command, capture_output=True, timeout=600, cwd=ROOT)
        output = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        print(output[-3000:])
        assert proc.returncode == 0, output[-3000:]
        assert " passed" in output and "skipped" not in output
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _as_unprivileged(args: list[str], scratch: Path) -> subprocess.CompletedProcess[bytes]:
    command = [
        "setpriv",
        "--reuid",
        UNPRIVILEGED,
        "--regid",
        UNPRIVILEGED,
        "--clear-groups",
        "env",
        "-i",
        f"HOME={scratch}",
        f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}",
        str(ROOTLESS_PYTHON.with_name("bastion")),
        *args,
    ]
    return subprocess.run(command, capture_output=True, timeout=120, cwd=scratch, input=b"")


def test_without_root_a_required_cgroup_layer_means_refusal(tmp_path: Path) -> None:
    """Fail closed: the default policy requires cgroups, which a non-root broker lacks."""
    _preconditions()
    scratch = _scratch_dir()
    try:
        policy = scratch / "policy.toml"
        policy.write_text(
            f'[[logs]]\npath = "{ROOT}/examples/logs/auth.log"\n[audit]\npath = "{scratch}/audit.jsonl"\n'
        )
        doctor = _as_unprivileged(["doctor", "--policy", str(policy)], scratch)
        assert doctor.returncode == 3, doctor.stderr
        assert b"cgroup: worker cgroups need root" in doctor.stdout
        served = _as_unprivileged(["serve", "--policy", str(policy)], scratch)
        assert served.returncode == 3 and served.stdout == b""
        assert b"refusing to serve" in served.stderr and b"cgroup" in served.stderr

        policy.write_text(policy.read_text() + '[sandbox]\nbest_effort = ["cgroup"]\n')
        doctor = _as_unprivileged(["doctor", "--policy", str(policy)], scratch)
        assert doctor.returncode == 0, doctor.stdout
        assert b"downgraded it to best-effort" in doctor.stdout
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
