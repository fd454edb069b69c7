"""Options the whole command line shares: -v before or after the subcommand."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from broker.cli.main import build_parser
from tests.conftest import BASTION, SAMPLE_LOGS, write_policy

COMMANDS = [
    ["serve", "--policy", "p.toml"],
    ["doctor"],
    ["token", "new", "alice"],
    ["audit", "verify", "a.jsonl"],
    ["audit", "keygen", "k"],
    ["intel", "compile", "--policy", "p.toml"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(command[:2]) for command in COMMANDS])
def test_verbose_is_taken_before_and_after_the_subcommand(command: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["-v", *command]).verbose
    assert parser.parse_args([*command, "-v"]).verbose
    assert parser.parse_args([*command, "--verbose"]).verbose
    assert not parser.parse_args(command).verbose


def test_serve_dash_v_logs_debug_lines(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, [SAMPLE_LOGS / "auth.log"])
    done = subprocess.run(
        [str(BASTION), "serve", "--policy", str(policy), "-v"], input="", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "bastion: DEBUG " in done.stderr
