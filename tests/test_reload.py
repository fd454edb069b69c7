"""SIGHUP reloads the policy without a restart (broker/cli/reload.py): a real `bastion serve`
over HTTP and over stdio, then the checks of a new policy in process. What a generation holds,
and which changes need a restart: tests/test_policy_generation.py."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from bastion_wire.plan import Plan
from broker.audit.log import AuditError, AuditLog
from broker.audit.verify import verify
from broker.calls import Bastion
from broker.cli.reload import ReloadRefused, ReloadSource, _prepare, reload
from broker.policy import load_policy
from broker.sandbox.host import cgroup_host, kinds_for, plans_for
from tests.conftest import BASTION, ROOT, SAMPLE_LOGS, read_audit, wait_no_workers, write_policy
from tests.test_http import AUTH, TOKENS, Served, free_port, http_policy, post
from tests.test_lifecycle import GREP_ONLY, NO_RATE_LIMIT, RawServer, wait_for_call_in_flight
from tests.test_policy_generation import policy_with

SYSLOG = SAMPLE_LOGS / "syslog"
SYSLOG_LINE = "Starting logrotate.service"
BASE = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@contextmanager
def served(policy: Path) -> Iterator[Served]:
    """A `bastion serve` over HTTP, killed at the end if the test did not stop it."""
    server = Served(policy, free_port())
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=10)


def reloads(audit: Path) -> list[dict[str, Any]]:
    return [record for record in read_audit(audit) if record["event"] == "policy_reload"]


def hup_and_wait(proc: subprocess.Popen[bytes], audit: Path, timeout_s: float = 30) -> dict[str, Any]:
    """SIGHUP, then the policy_reload record it produced (bounded wait)."""
    before = len(reloads(audit))
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = reloads(audit)
        if len(found) > before:
            return found[-1]
        assert proc.poll() is None, "SIGHUP stopped the server"
        time.sleep(0.05)
    raise TimeoutError("no policy_reload record")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rpc(url: str, token: str, session: str, request_id: int, method: str, params: dict[str, Any]) -> httpx2.Response:
    headers = {
        **BASE,
        "Authorization": f"Bearer {token}",
        "Mcp-Session-Id": session,
        "Mcp-Protocol-Version": "2025-06-18",
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return httpx2.post(url, headers=headers, content=json.dumps(body), timeout=30)


def open_session(url: str, token: str) -> str:
    response = post(url, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    session = response.headers["mcp-session-id"]
    headers = {
        **BASE,
        "Authorization": f"Bearer {token}",
        "Mcp-Session-Id": session,
        "Mcp-Protocol-Version": "2025-06-18",
    }
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx2.post(url, headers=headers, content=json.dumps(note), timeout=10).status_code == 202
    return session


def tool_text(response: httpx2.Response) -> tuple[bool, str]:
    """(is_error, text) of a tools/call answered as JSON or as one SSE event."""
    assert response.status_code == 200, response.text
    body = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        body = next(line[5:] for line in body.splitlines() if line.startswith("data:"))
    result = json.loads(body)["result"]
    return bool(result.get("isError")), result["content"][0]["text"]


def query(url: str, token: str, session: str, request_id: int, log: Path, pattern: str) -> tuple[bool, str]:
    arguments = {"log_path": str(log), "pattern": pattern, "max_lines": 2}
    return tool_text(rpc(url, token, session, request_id, "tools/call", {"name": "query_logs", "arguments": arguments}))


# --- over HTTP -------------------------------------------------------------------------


def test_http_reload_adds_a_log_and_revokes_a_token_at_once(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with served(http_policy(tmp_path)) as server:
        alice, bob = open_session(server.url, TOKENS["alice"]), open_session(server.url, TOKENS["bob"])
        refused, text = query(server.url, TOKENS["alice"], alice, 2, SYSLOG, SYSLOG_LINE)
        assert refused and "not an allowlisted log" in text
        assert not query(server.url, TOKENS["bob"], bob, 3, AUTH, "Accepted")[0]

        policy = (
            (tmp_path / "policy.toml")
            .read_text()
            .replace(f'path = "{AUTH}"', f'path = "{AUTH}"\n\n[[logs]]\npath = "{SYSLOG}"')
        )
        policy = policy.replace('name = "bob"', 'name = "bob"\nrevoked = true')
        (tmp_path / "policy.toml").write_text(policy)
        record = hup_and_wait(server.proc, audit)

        assert record["outcome"] == "applied" and record["policy_sha256"] == sha256_of(tmp_path / "policy.toml")
        refused, text = query(server.url, TOKENS["alice"], alice, 4, SYSLOG, SYSLOG_LINE)
        assert not refused and SYSLOG_LINE in text  # the added log, in a session opened before
        # Bob's session was open before the reload: his very next request is refused.
        assert rpc(server.url, TOKENS["bob"], bob, 5, "tools/list", {}).status_code == 401
        assert post(server.url, {"Authorization": f"Bearer {TOKENS['bob']}"}).status_code == 401
        code, stderr = server.stop()
    assert code == 0, stderr
    assert "policy reloaded" in stderr
    records = read_audit(audit)
    sessions = [(r["client"], r["action"]) for r in records if r["event"] == "session"]
    assert ("bob", "revoked") in sessions and ("alice", "revoked") not in sessions
    assert records[-1]["event"] == "server_stop" and records[-1]["policy_sha256"] == record["policy_sha256"]
    assert verify([str(audit)]).problem is None
    assert wait_no_workers() == []


def test_http_reload_narrows_a_clients_scope_in_its_open_session(tmp_path: Path) -> None:
    """Scopes are read from the current generation on every request (broker/scopes.py)."""
    audit = tmp_path / "audit.jsonl"
    with served(http_policy(tmp_path)) as server:
        alice = open_session(server.url, TOKENS["alice"])
        assert not query(server.url, TOKENS["alice"], alice, 2, AUTH, "Accepted")[0]
        policy = (tmp_path / "policy.toml").read_text().replace('name = "alice"', 'name = "alice"\nscope = "narrow"')
        (tmp_path / "policy.toml").write_text(policy + '\n[scopes.narrow]\ntools = ["list_logs"]\n')
        assert hup_and_wait(server.proc, audit)["outcome"] == "applied"
        listed = rpc(server.url, TOKENS["alice"], alice, 3, "tools/list", {}).text
        assert '"list_logs"' in listed and '"query_logs"' not in listed
        arguments = {"log_path": str(AUTH), "pattern": "Accepted"}
        call = rpc(server.url, TOKENS["alice"], alice, 4, "tools/call", {"name": "query_logs", "arguments": arguments})
        assert "unknown tool" in call.text and '"result"' not in call.text  # as if it did not exist
        code, stderr = server.stop()
    assert code == 0, stderr
    ends = [r for r in read_audit(audit) if r["event"] == "end" and r["tool"] == "query_logs"]
    assert "scope" not in ends[0] and ends[-1]["scope"] == "narrow" and ends[-1]["outcome"] != "ok"


def test_http_refused_reloads_keep_the_old_policy(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    good = http_policy(tmp_path)
    original = good.read_text()
    with served(good) as server:
        alice = open_session(server.url, TOKENS["alice"])
        good.write_text(original + "\n[limits\nbroken = \n")  # not TOML
        broken = hup_and_wait(server.proc, audit)
        assert not query(server.url, TOKENS["alice"], alice, 2, AUTH, "Accepted")[0]  # still serving

        moved = original.replace(str(audit), str(tmp_path / "elsewhere.jsonl"))
        good.write_text(moved.replace('name = "bob"', 'name = "bob"\nrevoked = true'))
        moved_audit = hup_and_wait(server.proc, audit)
        # Refused as a whole: bob's revocation in the same file did not apply either.
        bob = open_session(server.url, TOKENS["bob"])
        assert not query(server.url, TOKENS["bob"], bob, 3, AUTH, "Accepted")[0]
        code, stderr = server.stop()
    assert code == 0, stderr
    assert broken["outcome"] == "refused" and "not valid TOML" in broken["error"]
    assert broken["policy_sha256"] == hashlib.sha256((original + "\n[limits\nbroken = \n").encode()).hexdigest()
    assert moved_audit["outcome"] == "refused" and moved_audit["error"] == "restart needed: audit.path"
    assert broken["kept_sha256"] == moved_audit["kept_sha256"] == hashlib.sha256(original.encode()).hexdigest()
    assert stderr.count("policy reload refused") == 2 and "restart needed: audit.path" in stderr
    assert not (tmp_path / "elsewhere.jsonl").exists()
    assert verify([str(audit)]).problem is None


# --- over stdio ----------------------------------------------------------------------------


def test_stdio_reload_while_a_call_is_in_flight(tmp_path: Path, slow_log: Path) -> None:
    """The call in flight finishes on the old policy (its log stays open), though the new one
    drops that log; new calls see the new policy at once."""
    audit = tmp_path / "audit.jsonl"
    extra = GREP_ONLY + NO_RATE_LIMIT
    policy = write_policy(tmp_path, [slow_log, AUTH], toml=extra, timeout_s=60)
    with RawServer(policy) as server:
        server.initialize()
        server.start_call(2, slow_log)
        wait_for_call_in_flight(audit)
        write_policy(tmp_path, [AUTH, SYSLOG], toml=extra, timeout_s=60)
        record = hup_and_wait(server.proc, audit)
        call = {"name": "query_logs", "arguments": {"log_path": str(SYSLOG), "pattern": SYSLOG_LINE}}
        server.send({"id": 3, "method": "tools/call", "params": call})
        added = server.receive(3)["result"]
        call = {"name": "query_logs", "arguments": {"log_path": str(slow_log), "pattern": "a"}}
        server.send({"id": 4, "method": "tools/call", "params": call})
        dropped = server.receive(4)["result"]
        in_flight = server.receive(2, timeout_s=60)["result"]
        code, stderr = server.close_stdin_and_wait()
    assert code == 0, stderr
    assert record["outcome"] == "applied" and record["policy_sha256"] == sha256_of(policy)
    assert not added.get("isError") and SYSLOG_LINE in added["content"][0]["text"]
    assert dropped["isError"] and "not an allowlisted log" in dropped["content"][0]["text"]
    assert not in_flight.get("isError"), in_flight
    records = read_audit(audit)
    assert records[-1]["event"] == "server_stop"
    assert verify([str(audit)]).problem is None


def test_reload_tells_systemd_and_sighup_never_kills(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    policy = write_policy(tmp_path, [AUTH])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": path}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)
        proc = subprocess.Popen(
            [str(BASTION), "serve", "--policy", str(policy)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            assert sock.recv(256) == b"READY=1"
            record = hup_and_wait(proc, tmp_path / "audit.jsonl")
            reloading = sock.recv(256).decode().split("\n")
            assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
            assert int(reloading[1].removeprefix("MONOTONIC_USEC=")) <= time.monotonic_ns() // 1000
            assert sock.recv(256) == b"READY=1"
            _, stderr = proc.communicate(timeout=30)  # closes stdin: a clean stop
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 0, stderr
    assert record["outcome"] == "applied" and record["policy_sha256"] == record["previous_sha256"]
    assert read_audit(tmp_path / "audit.jsonl")[-1]["event"] == "server_stop"


# --- checking a new policy, in process ------------------------------------------------------


def _source_and_plans(tmp_path: Path, profiles: Path | None = None) -> tuple[ReloadSource, dict[str, Plan]]:
    policy = policy_with(tmp_path, "")
    cgroups = cgroup_host()
    kinds = kinds_for(policy)
    profiles_dir = str(profiles) if profiles else None
    source = ReloadSource(str(tmp_path / "rules.toml"), None, profiles_dir, cgroups)
    return source, plans_for(policy.sandbox, cgroups, profiles_dir, kinds, policy.limits.timeout_s)


@pytest.mark.parametrize(("timeout_s", "refusal"), [(5, None), (10, None), (60, "restart needed: limits.timeout_s")])
def test_a_timeout_beyond_the_workers_cpu_limit_needs_a_restart(
    tmp_path: Path, timeout_s: int, refusal: str | None
) -> None:
    source, plans = _source_and_plans(tmp_path)  # timeout_s = 10: CPU limits of 11 s and more
    old = policy_with(tmp_path, "")
    policy_with(tmp_path, f"[limits]\ntimeout_s = {timeout_s}\n")
    if refusal is None:
        policy, allowlist = _prepare(source, old, plans)
        allowlist.close()
        assert policy.limits.timeout_s == timeout_s
        return
    with pytest.raises(ReloadRefused, match=refusal):
        _prepare(source, old, plans)


def test_a_changed_sandbox_profile_needs_a_restart(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for profile in (ROOT / "sandbox_profiles").glob("*.toml"):
        (profiles / profile.name).write_text(profile.read_text())
    source, plans = _source_and_plans(tmp_path, profiles)
    old = policy_with(tmp_path, "")
    _prepare(source, old, plans)[1].close()  # unchanged: accepted
    grep = profiles / "grep.toml"
    grep.write_text(grep.read_text().replace("cpu_s = 20", "cpu_s = 25"))
    with pytest.raises(ReloadRefused, match="restart needed: sandbox profiles"):
        _prepare(source, old, plans)


def _strictpolicy_with(tmp_path: Path, *logs: Path) -> Any:
    entries = "".join(f'[[logs]]\npath = "{log}"\n\n' for log in logs)
    file = tmp_path / "rules.toml"
    file.write_text(f'{entries}[audit]\npath = "{tmp_path / "audit.jsonl"}"\n\n[sandbox]\nstrict_modes = true\n')
    return load_policy(file)


def test_a_reload_that_start_up_would_refuse_is_refused(tmp_path: Path) -> None:
    """The same preflight checks as at start: under strict_modes, a log others can replace."""
    source, plans = _source_and_plans(tmp_path)
    old = _strictpolicy_with(tmp_path, AUTH)
    _prepare(source, old, plans)[1].close()  # the same policy again: accepted
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    (open_dir / "app.log").write_text("x\n")
    _strictpolicy_with(tmp_path, AUTH, open_dir / "app.log")
    with pytest.raises(ReloadRefused, match="strict_modes"):
        _prepare(source, old, plans)


def test_a_symlinked_log_in_the_new_policy_is_refused(tmp_path: Path) -> None:
    source, plans = _source_and_plans(tmp_path)
    old = policy_with(tmp_path, "")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "app.log").write_text("x\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    policy_with(tmp_path, f'[[logs]]\npath = "{tmp_path / "link" / "app.log"}"\n')
    with pytest.raises(ReloadRefused, match=r"policy error: logs\[1\]\.path"):
        _prepare(source, old, plans)


class _PlansOnly:
    """Stands in for the worker pool: what a reload asks of it."""

    def __init__(self, plans: dict[str, Plan]) -> None:
        self.plans = plans

    def has_ripgrep(self) -> bool:
        return False


@pytest.mark.anyio
async def test_a_reload_the_audit_log_cannot_record_is_not_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, plans = _source_and_plans(tmp_path)
    policy = policy_with(tmp_path, "")
    audit = AuditLog(policy.audit.path)
    bastion = Bastion(policy, _PlansOnly(plans), audit, client="tester")  # type: ignore[arg-type]
    first = bastion.generation
    policy_with(tmp_path, f'[[logs]]\npath = "{SYSLOG}"\n')
    write = audit.write

    def failing(event: str, **fields: Any) -> int:
        if event == "policy_reload":
            raise AuditError("the disk is full")
        return write(event, **fields)

    monkeypatch.setattr(audit, "write", failing)
    assert not await reload(bastion, source)
    assert bastion.generation is first and not first.closed  # fail closed: nothing unaudited applies
    monkeypatch.undo()
    assert await reload(bastion, source)
    assert str(SYSLOG) in [log.path for log in bastion.allowlist.logs()] and first.closed
    audit.close()
    assert [r["outcome"] for r in reloads(tmp_path / "audit.jsonl")] == ["applied"]


@pytest.mark.anyio
async def test_an_unexpected_failure_is_a_refused_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, plans = _source_and_plans(tmp_path)
    policy = policy_with(tmp_path, "")
    audit = AuditLog(policy.audit.path)
    bastion = Bastion(policy, _PlansOnly(plans), audit, client="tester")  # type: ignore[arg-type]

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("broker.cli.reload._prepare", broken)
    assert not await reload(bastion, source)  # raised nothing: the server would go on serving
    audit.close()
    (record,) = reloads(tmp_path / "audit.jsonl")
    assert record["outcome"] == "refused" and "a bug" in record["error"]
