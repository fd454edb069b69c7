"""`make demo` as a new user meets it: a server that refuses to start is reported in
its own words, in one line, with a non-zero exit; never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
DEMO = EXAMPLES / "demo.py"


def example_policy_copy(tmp_path: Path, audit_path: str) -> Path:
    """The example policy with its read-only inputs pointing back at examples/."""
    text = (EXAMPLES / "policy.toml").read_text()
    text = re.sub(r'= "(logs/|intel/|journal")', lambda m: f'= "{EXAMPLES}/{m.group(1)}', text)
    text = text.replace('path = "${state}/audit.jsonl"', f'path = "{audit_path}"', 1)
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    return policy


def run_demo(policy: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO), "--policy", str(policy), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_a_refusal_to_serve_is_one_line_and_a_failure(tmp_path: Path) -> None:
    a_directory = tmp_path / "not-a-file"
    a_directory.mkdir()
    done = run_demo(example_policy_copy(tmp_path, str(a_directory)), tmp_path / "state")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    reason, hint = done.stderr.strip().splitlines()[-2:]
    assert reason.startswith("demo: the MCP session with bastion serve failed: bastion: ERROR refusing to serve:")
    assert "audit.path" in reason and "not-a-file: not a regular file" in reason
    assert hint.startswith("demo: `bastion doctor --policy ")


def test_a_policy_error_is_reported_before_anything_starts(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[limits]\nmax_lines = 0\n")
    done = run_demo(policy, tmp_path / "state")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("demo: policy error:")
    assert not (tmp_path / "state").exists()
