"""`make deps` (tools/os-packages.sh): silent when nothing is missing, and a non-root user
gets the one command to run instead of a failure further on."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "tools" / "os-packages.sh"
MISSING = "bastion-test-no-such-package"


def _run(*packages: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] if as_nobody else []
    return subprocess.run([*prefix, "sh", str(SCRIPT), *packages], capture_output=True, text=True, timeout=60, cwd="/")


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian/Ubuntu system")
def test_nothing_missing_is_silent() -> None:
    done = _run("dpkg", "coreutils")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.skipif(
    shutil.which("dpkg-query") is None or shutil.which("setpriv") is None, reason="needs dpkg and setpriv"
)
@pytest.mark.skipif(os.geteuid() != 0, reason="switches to an unprivileged uid")
def test_a_user_gets_the_exact_command_and_nothing_is_installed() -> None:
    done = _run("dpkg", MISSING, as_nobody=True)
    assert done.returncode == 1 and done.stdout == ""
    assert f"missing OS packages: {MISSING}\n" in done.stderr
    assert f"    sudo apt-get update && sudo apt-get install -y {MISSING}\n" in done.stderr
    assert "Traceback" not in done.stderr
