"""Interoperability: the official MCP Inspector (CLI mode) lists and calls Bastion.

A second, independent client implementation (TypeScript) guards against
Bastion only working with the Python SDK's own client. The Inspector is
fetched by npx from the npm registry on first use; the test is skipped only
when Node.js is not installed at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from broker.tools.resources import log_uri
from tests.conftest import BASTION, SAMPLE_LOGS, write_policy

INSPECTOR = "@modelcontextprotocol/inspector@0.15.0"
NPX = shutil.which("npx")

pytestmark = pytest.mark.skipif(NPX is None, reason="Node.js/npx is not installed")


def inspector(policy: Path, *method_args: str) -> dict:
    command = [NPX or "npx", "--yes", INSPECTOR, "--cli", str(BASTION), "serve", "--policy", str(policy), *method_args]
    proc = subprocess.run(command, capture_output=True, timeout=300, cwd=policy.parent)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return json.loads(proc.stdout)


def test_inspector_lists_calls_and_reads(tmp_path: Path) -> None:
    auth = SAMPLE_LOGS / "auth.log"
    policy = write_policy(tmp_path, [auth])
    tools = inspector(policy, "--method", "tools/list")["tools"]
    assert [tool["name"] for tool in tools] == ["list_logs", "query_logs"]

    called = inspector(
        policy,
        "--method",
        "tools/call",
        "--tool-name",
        "query_logs",
        "--tool-arg",
        f"log_path={auth}",
        "--tool-arg",
        "pattern=Accepted password for deploy",
    )
    assert called["isError"] is False
    assert called["structuredContent"]["lines"][0]["text"].endswith("ssh2")

    # The Inspector checks structuredContent against the outputSchema too.
    listed = inspector(policy, "--method", "tools/call", "--tool-name", "list_logs")
    assert listed["isError"] is False
    assert [log["log_path"] for log in listed["structuredContent"]["logs"]] == [str(auth)]

    resources = inspector(policy, "--method", "resources/list")["resources"]
    assert [resource["uri"] for resource in resources] == [log_uri(str(auth))]
    read = inspector(policy, "--method", "resources/read", "--uri", log_uri(str(auth)))
    assert read["contents"][0]["text"].endswith("\n")
