"""Start-up (issue 18 item 7): the commands that do not serve never import the MCP SDK.

Each command runs as the installed `bastion` script under `python -X importtime`, which
names every module the process imported; none of the SDK's stack may be among them.
`serve` is the control: it must import the SDK, so the check can see one. Its
spawn-to-initialize time is bench/bench_startup.py's, a row of `make bench`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.audit.log import AuditLog
from tests.conftest import BASTION, SAMPLE_LOGS, write_policy

# The MCP SDK, its types, and the stack it stands on; none is needed to print a version,
# make a token, verify a chain or examine the sandbox.
SDK_STACK = frozenset({"mcp", "mcp_types", "pydantic", "pydantic_core", "starlette", "uvicorn", "sse_starlette"})
RUN_TIMEOUT_S = 120


def imported(stderr: str) -> set[str]:
    """Top-level packages named by -X importtime's report ("import time: self | cumulative | name")."""
    found = set()
    for line in stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and len(fields) == 3 and fields[1].strip().isdigit():  # not the header
            found.add(fields[2].strip().split(".")[0])
    return found


def run(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(BASTION), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    return done, time.perf_counter() - started


def test_the_report_is_read_as_expected() -> None:
    report = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       219 |     631977 |       mcp\n"
        "import time:        17 |     632007 |   mcp.server.lowlevel\n"
        "bastion: INFO something else | with | bars\n"
    )
    assert imported(report) == {"mcp"}


def test_version_loads_no_sdk_and_is_fast() -> None:
    done, seconds = run("--version")
    assert done.returncode == 0 and done.stdout.startswith("bastion "), done.stderr[-2000:]
    assert imported(done.stderr) & SDK_STACK == set()
    assert "broker" in imported(done.stderr)  # the report did cover the command's own imports
    print(f"bastion --version: {seconds * 1000:.0f} ms wall, under -X importtime")


def test_token_new_loads_no_sdk() -> None:
    done, _ = run("token", "new", "alice")
    assert done.returncode == 0 and "token_sha256 = " in done.stdout, done.stderr[-2000:]
    assert imported(done.stderr) & SDK_STACK == set()


def test_audit_verify_loads_no_sdk(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    audit.write("server_start", version="test")
    audit.write("server_stop", reason="test")
    audit.close()
    done, _ = run("audit", "verify", str(path))
    assert done.returncode == 0 and done.stdout.startswith("OK: 2 records"), done.stdout + done.stderr[-2000:]
    assert imported(done.stderr) & SDK_STACK == set()


def test_doctor_loads_no_sdk(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, [SAMPLE_LOGS / "auth.log"])
    done, _ = run("doctor", "--policy", str(policy))
    assert "verdict: " in done.stdout, done.stdout + done.stderr[-2000:]  # it examined the host
    assert imported(done.stderr) & SDK_STACK == set()


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["intel", "--help"], ["sandbox", "--help"]])
def test_help_loads_no_sdk(args: list[str]) -> None:
    done, _ = run(*args)
    assert done.returncode == 0 and "usage: bastion" in done.stdout, done.stderr[-2000:]
    assert imported(done.stderr) & SDK_STACK == set()


def test_serve_does_load_the_sdk(tmp_path: Path) -> None:
    """The control: serve, which stops cleanly when its stdin is closed, has imported the SDK."""
    done, _ = run("serve", "--policy", str(write_policy(tmp_path, [SAMPLE_LOGS / "auth.log"])))
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"mcp", "mcp_types", "pydantic", "uvicorn"} <= imported(done.stderr)
