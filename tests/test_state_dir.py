"""Where `${state}/` paths of a policy go, in the documented order."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy import PolicyError, parse_policy
from broker.state_dir import StateDirError, expand, state_directory

LOGS = '[[logs]]\npath = "/var/log/auth.log"\n'


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.parametrize(
    ("environment", "explicit", "expected"),
    [
        ({}, None, "home/.local/state/bastion"),
        ({"XDG_STATE_HOME": "/xdg"}, None, "/xdg/bastion"),
        ({"XDG_STATE_HOME": "relative/ignored"}, None, "home/.local/state/bastion"),
        ({"STATE_DIRECTORY": "/var/lib/bastion:/var/lib/other", "XDG_STATE_HOME": "/xdg"}, None, "/var/lib/bastion"),
        ({"STATE_DIRECTORY": "/var/lib/bastion"}, "/given", "/given"),
    ],
)
def test_the_state_directory_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environment: dict[str, str], explicit: str | None, expected: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert state_directory(explicit) == tmp_path / expected  # an absolute `expected` wins the join


def test_only_the_token_at_the_start_is_expanded() -> None:
    assert expand("${state}/audit.jsonl", "/s") == "/s/audit.jsonl"
    assert expand("/var/log/bastion/audit.jsonl", "/s") == "/var/log/bastion/audit.jsonl"
    with pytest.raises(StateDirError):
        expand("/var/${state}/audit.jsonl", "/s")


def test_a_policy_writes_under_the_state_dir_only_where_it_says_so(tmp_path: Path) -> None:
    text = f'{LOGS}[audit]\npath = "${{state}}/audit.jsonl"\n'.encode()
    assert parse_policy(text, tmp_path, state_dir="/srv/state").audit.path == "/srv/state/audit.jsonl"
    relative = f'{LOGS}[audit]\npath = "audit.jsonl"\n'.encode()
    assert parse_policy(relative, tmp_path, state_dir="/srv/state").audit.path == str(tmp_path / "audit.jsonl")
    misplaced = f'{LOGS}[audit]\npath = "x/${{state}}"\n'.encode()
    with pytest.raises(PolicyError, match=r"audit\.path: \$\{state\} may only start the path"):
        parse_policy(misplaced, tmp_path)
