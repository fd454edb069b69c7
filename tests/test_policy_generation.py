"""What one policy generation holds and when it lets go (broker/policy_generation.py), which
policy changes need a restart, and the sessions a revocation withdraws."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.files.allowlist import Allowlist
from broker.policy import Policy, load_policy
from broker.policy_generation import LIVE_SECTIONS, NOT_READ, PolicyGeneration, restart_needed
from broker.transport.session_table import SessionTable
from tests.test_http import AUTH

FIXED = [
    ("[audit]\nmax_bytes = 1000000\n", "audit.max_bytes"),
    ('[sandbox]\nworker_user = "nobody"\n', "sandbox.worker_user"),
    ("[workers]\nprestart = 1\n", "workers.prestart"),
    ("[limits]\nmax_workers = 2\n", "limits.max_workers"),
    ("[http]\nmax_sessions = 3\n", "http.max_sessions"),
    ('[http]\nallowed_hosts = ["example:1"]\n', "http.allowed_hosts"),
    ('[intel]\ndatabase = "intel.db"\n', "intel"),
]
LIVE = [
    "[limits]\nmax_lines = 10\n",
    "[rate_limit]\ncalls = 5\n",
    '[search]\nengine = "grep"\n',
    f'[[http.clients]]\nname = "carol"\ntoken_sha256 = "{"0" * 64}"\n',
    '[scopes.soc]\ntools = ["list_logs"]\n',  # scopes are read per request (broker/scopes.py)
    '[scopes.soc]\nmax_lines = 5\n[stdio]\nscope = "soc"\n',
]


def policy_with(tmp_path: Path, text: str) -> Policy:
    """A policy with `text` appended; an [audit] `text` extends the policy's own [audit]."""
    audit = f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
    if text.startswith("[audit]\n"):
        audit, text = audit + text.removeprefix("[audit]\n"), ""
    file = tmp_path / "rules.toml"
    file.write_text(f'[[logs]]\npath = "{AUTH}"\n\n{audit}\n{text}')
    return load_policy(file)


@pytest.mark.parametrize(("change", "key"), FIXED)
def test_what_needs_a_restart(tmp_path: Path, change: str, key: str) -> None:
    assert restart_needed(policy_with(tmp_path, ""), policy_with(tmp_path, change)) == [key]


@pytest.mark.parametrize("change", LIVE)
def test_what_applies_live(tmp_path: Path, change: str) -> None:
    assert restart_needed(policy_with(tmp_path, ""), policy_with(tmp_path, change)) == []


def test_an_old_allowlist_closes_only_after_its_last_call(tmp_path: Path) -> None:
    policy = policy_with(tmp_path, "")
    old = PolicyGeneration(policy, Allowlist(policy))
    with old.in_use():
        old.retire()
        assert not old.closed
        assert old.allowlist.pinned[0].dirfd is not None
        os.fstat(old.allowlist.pinned[0].dirfd)  # still open for the call in flight
    assert old.closed


def test_unchanged_rate_limits_keep_their_buckets(tmp_path: Path) -> None:
    policy = policy_with(tmp_path, "")
    old = PolicyGeneration(policy, Allowlist(policy))
    same = PolicyGeneration.succeeding(old, policy_with(tmp_path, ""), Allowlist(policy))
    changed = PolicyGeneration.succeeding(old, policy_with(tmp_path, "[rate_limit]\ncalls = 5\n"), Allowlist(policy))
    assert same.limiter is old.limiter and changed.limiter is not old.limiter


def test_withdrawn_sessions_wait_for_their_post() -> None:
    table = SessionTable(300, 8, 32, clock=lambda: 0.0)
    for sid, client in (("a", "alice"), ("b1", "bob"), ("b2", "bob")):
        assert table.admit(client).refused is None
        table.opened(client, sid, None)
    table.begin("b2", post=True)
    assert [sid for sid, _ in table.withdraw(lambda name: name != "bob")] == ["b1"]
    table.end("b2", post=True)
    assert [sid for sid, _ in table.withdraw(lambda name: name != "bob")] == ["b2"]
    assert table.get("a") is not None


def test_every_section_is_live_or_fixed_on_purpose() -> None:
    """A section added to Policy later needs a restart until it is listed as live."""
    fixed = set(Policy.__struct_fields__) - set(LIVE_SECTIONS) - set(NOT_READ)
    # journals: their directories are pinned at start, and journal workers started only with them.
    assert fixed == {"audit", "sandbox", "workers", "journals"}
