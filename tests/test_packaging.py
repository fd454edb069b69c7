"""A built wheel, installed into a fresh virtualenv, is a working Bastion: the
command, its version, the shipped sandbox profiles and the bundled example."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(work / "dist")],
                   check=True, timeout=600, capture_output=True)
    (wheel,) = (work / "dist").glob("bastion_mcp-*.whl")
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                         timeout=900, capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    return env_dir


def test_the_wheel_installs_a_working_command(installed: Path) -> None:
    bastion = installed / "bin" / "bastion"
    version = subprocess.run([str(bastion), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip().startswith("bastion 0.")
    example = installed / "share" / "bastion-mcp" / "examples" / "policy.toml"
    assert example.is_file() and (example.parent / "logs" / "auth.log.2.gz").is_file()
    assert (example.parent / "intel" / "sample-asn.mmdb").is_file()
    doctor = subprocess.run([str(bastion), "doctor", "--policy", str(example)], capture_output=True, text=True, timeout=300)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


@pytest.mark.anyio
async def test_the_installed_server_answers_from_the_shipped_example(installed: Path) -> None:
    example = installed / "share" / "bastion-mcp" / "examples" / "policy.toml"
    params = StdioServerParameters(command=str(installed / "bin" / "bastion"), args=["serve", "--policy", str(example)], env={"PATH": "/usr/bin:/bin"})
    async with Client(params, read_timeout_seconds=60) as client:
        result = await client.call_tool("query_logs", {"log_path": str(example.parent / "logs" / "auth.log"), "pattern": "Accepted password for deploy", "max_lines": 1})
    assert not result.is_error and len(result.structured_content["lines"]) == 1
