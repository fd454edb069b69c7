"""A built wheel, installed into a fresh virtualenv, is a working Bastion: the
command, its version, the shipped sandbox profiles and the bundled example; and
an ordinary user can use the installed example, which writes only to that user's
state directory, never into the installation prefix."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

DISTRIBUTION = "bastion-soc-mcp"
UNPRIVILEGED = "65534"
# Debian's interpreter, which any user may execute (a pyenv build under /root is not).
SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    # A prefix like /opt/bastion: world-readable, writable by root only.
    work = Path(tempfile.mkdtemp(prefix="bastion-wheel-"))
    os.chmod(work, 0o755)
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(work / "dist")],
            check=True,
            timeout=600,
            capture_output=True,
        )
        (wheel,) = (work / "dist").glob("bastion_soc_mcp-*.whl")
        python = SYSTEM_PYTHON if SYSTEM_PYTHON.exists() else Path(sys.executable)
        env_dir = work / "venv"
        subprocess.run([str(python), "-m", "venv", str(env_dir)], check=True, timeout=300, capture_output=True)
        pip = subprocess.run(
            [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
            timeout=900,
            capture_output=True,
            text=True,
        )
        assert pip.returncode == 0, pip.stderr[-2000:]
        yield env_dir
    finally:
        shutil.rmtree(work, ignore_errors=True)


def example_of(installed: Path) -> Path:
    return installed / "share" / DISTRIBUTION / "examples" / "policy.toml"


def test_the_wheel_installs_a_working_command(installed: Path, tmp_path: Path) -> None:
    bastion = installed / "bin" / "bastion"
    version = subprocess.run([str(bastion), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip().startswith("bastion 0.")
    example = example_of(installed)
    assert example.is_file() and (example.parent / "logs" / "auth.log.2.gz").is_file()
    assert (example.parent / "intel" / "sample-asn.mmdb").is_file()
    deploy = example.parent.parent / "deploy"  # what docs/DEPLOY.md installs from the share directory
    shipped = {path.relative_to(deploy).as_posix() for path in deploy.rglob("*") if path.is_file()}
    expected = {path.relative_to(ROOT / "deploy").as_posix() for path in (ROOT / "deploy").rglob("*") if path.is_file()}
    assert shipped == expected
    doctor = subprocess.run(
        [str(bastion), "doctor", "--policy", str(example), "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_the_metadata_declares_what_is_imported(installed: Path) -> None:
    code = (
        "import importlib.metadata as m; d = m.distribution('bastion-soc-mcp'); "
        "print(d.metadata['License-Expression']); print('\\n'.join(d.requires or []))"
    )
    done = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Apache-2.0"
    runtime = {re.split(r"[<>=!; \[]", line, maxsplit=1)[0] for line in lines[1:] if "extra ==" not in line}
    assert {"mcp", "mcp-types", "pyseccomp", "msgspec"} <= runtime
    assert "psutil" not in runtime  # only the tests and benchmarks use it


@pytest.mark.anyio
async def test_the_installed_server_answers_from_the_shipped_example(installed: Path, tmp_path: Path) -> None:
    example = example_of(installed)
    env = {"PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(tmp_path)}
    params = StdioServerParameters(
        command=str(installed / "bin" / "bastion"), args=["serve", "--policy", str(example)], env=env
    )
    async with Client(params, read_timeout_seconds=60) as client:
        result = await client.call_tool(
            "query_logs",
            {
                "log_path": str(example.parent / "logs" / "auth.log"),
                "pattern": "Accepted password for deploy",
                "max_lines": 1,
            },
        )
    assert not result.is_error and len(result.structured_content["lines"]) == 1
    assert (tmp_path / "bastion" / "audit.jsonl").is_file()


# --- the installed example as an ordinary user ---------------------------------------


def _as_user(scratch: Path, *argv: str) -> list[str]:
    return [
        "setpriv",
        "--reuid",
        UNPRIVILEGED,
        "--regid",
        UNPRIVILEGED,
        "--clear-groups",
        "env",
        "-i",
        f"HOME={scratch}",
        "PATH=/usr/bin:/bin",
        *argv,
    ]


@pytest.fixture
def user_home() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    scratch = Path(tempfile.mkdtemp(prefix="bastion-user-"))
    os.chown(scratch, int(UNPRIVILEGED), int(UNPRIVILEGED))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _files_under(prefix: Path) -> set[Path]:
    return {path for path in prefix.rglob("*") if "__pycache__" not in path.parts}


def _user_copy(example: Path, home: Path) -> Path:
    """The installed example plus the one line a non-root broker needs (no cgroups
    without root), with its read-only inputs still pointing into the prefix."""
    text = re.sub(r'= "(logs|intel)/', lambda m: f'= "{example.parent}/{m.group(1)}/', example.read_text())
    policy = home / "policy.toml"
    policy.write_text(text + '\n[sandbox]\nbest_effort = ["cgroup"]\n')
    os.chown(policy, int(UNPRIVILEGED), int(UNPRIVILEGED))
    return policy


@pytest.mark.anyio
async def test_an_ordinary_user_runs_the_installed_example(installed: Path, user_home: Path) -> None:
    example, bastion = example_of(installed), str(installed / "bin" / "bastion")
    before = _files_under(installed)
    compiled = subprocess.run(
        _as_user(user_home, bastion, "intel", "compile", "--policy", str(example)),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=user_home,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    state = user_home / ".local" / "state" / "bastion"
    assert (state / "intel.db").is_file()

    policy = _user_copy(example, user_home)
    command, *args = _as_user(user_home, bastion, "serve", "--policy", str(policy))
    async with Client(
        StdioServerParameters(command=command, args=args, cwd=str(user_home)), read_timeout_seconds=60
    ) as client:
        found = await client.call_tool(
            "query_logs",
            {
                "log_path": str(example.parent / "logs" / "auth.log"),
                "pattern": "Accepted password for deploy",
                "max_lines": 1,
            },
        )
        looked_up = await client.call_tool("check_ip_reputation", {"ip_address": "45.155.205.233"})
    assert not found.is_error, found.content
    assert not looked_up.is_error, looked_up.content
    audit = state / "audit.jsonl"
    assert audit.is_file() and audit.stat().st_uid == int(UNPRIVILEGED)
    assert _files_under(installed) == before  # nothing was written into the prefix
