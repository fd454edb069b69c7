"""Something planted where a live server's files should be (issue 21.1).

A FIFO where the audit log was must not freeze the broker: every call is
refused at once with the audit-down message, tools/list still answers, and
once the FIFO is gone the next call succeeds in a new audit file that
continues the chain (`bastion audit verify` accepts old and new together).
Unit-level cases (symlink, directory, foreign owner) are in test_audit_log.py.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from broker.calls import AUDIT_DOWN
from tests.conftest import BASTION, SAMPLE_LOGS, read_audit, run_bounded, wait_no_workers, write_policy
from tests.test_lifecycle import RawServer

ANSWER_WITHIN_S = 5.0
AUTH = SAMPLE_LOGS / "auth.log"


def _call(server: RawServer, request_id: int) -> dict[str, Any]:
    arguments = {"log_path": str(AUTH), "pattern": "sshd", "max_lines": 1}
    server.send({"id": request_id, "method": "tools/call", "params": {"name": "query_logs", "arguments": arguments}})
    return server.receive(request_id, timeout_s=ANSWER_WITHIN_S)["result"]


def _wait_for_event(audit: Path, event: str) -> None:
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while not any(r["event"] == event for r in read_audit(audit)):
        assert time.monotonic() < deadline, f"no {event} record"
        time.sleep(0.01)


def test_a_fifo_planted_at_the_audit_path_is_refused_and_the_log_recovers(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with RawServer(write_policy(tmp_path, [AUTH])) as server:
        server.initialize()
        assert not _call(server, 2)["isError"]
        _wait_for_event(audit, "worker_exit")  # written just after the reply: keep it in the old file
        rotated = audit.with_name("audit.jsonl.1")
        audit.rename(rotated)
        os.mkfifo(audit)
        refused = _call(server, 3)
        assert refused["isError"] and refused["content"][0]["text"] == AUDIT_DOWN
        server.send({"id": 4, "method": "tools/list"})
        assert server.receive(4, timeout_s=ANSWER_WITHIN_S)["result"]["tools"]
        audit.unlink()
        assert not _call(server, 5)["isError"]
        code, stderr = server.close_stdin_and_wait()
    assert code == 0
    assert "is a FIFO" in stderr  # the operator is told why calls were refused
    records = read_audit(rotated) + read_audit(audit)
    begins = [r["seq"] for r in records if r["event"] == "begin"]
    assert (
        begins == [r["call"] for r in records if r["event"] == "end"] and len(begins) == 2
    )  # the refused call has neither
    assert read_audit(audit)[0]["event"] == "audit_continued"
    assert wait_no_workers() == []
    verify = subprocess.run(
        [str(BASTION), "audit", "verify", str(rotated), str(audit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


# --- files the broker reads: policy, intel database, feeds ---------------------------


def _bounded(action: Any, fifo: Path) -> Any:
    """The broker would be stuck reading: a writer releases it."""
    return run_bounded(action, fifo, ANSWER_WITHIN_S, os.O_WRONLY)


def _plant(path: Path, kind: str, real: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(real)


def test_a_policy_that_is_a_fifo_or_directory_is_refused_and_a_symlink_is_followed(tmp_path: Path) -> None:
    from broker.policy import PolicyError, load_policy

    real = write_policy(tmp_path, [AUTH])
    for kind in ("fifo", "directory"):
        planted = tmp_path / f"{kind}.toml"
        _plant(planted, kind, real)
        with pytest.raises(PolicyError, match="cannot read policy file"):
            _bounded(functools.partial(load_policy, planted), planted)
    link = tmp_path / "link.toml"
    _plant(link, "symlink", real)  # config management's /etc/bastion/policy.toml -> ... is fine
    assert load_policy(link).audit.path == load_policy(real).audit.path


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink"])
def test_an_intel_database_that_is_not_our_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    from broker.errors import ToolError
    from broker.policy import Intel
    from broker.tools.check_ip_reputation.lookup import _open_intel

    real = tmp_path / "real.db"
    real.write_bytes(b"a compiled database stand-in")
    planted = tmp_path / "intel.db"
    _plant(planted, kind, real)
    with pytest.raises(ToolError, match="threat intelligence is not available"):
        _bounded(lambda: _open_intel(Intel(database=str(planted))), planted)


def test_an_mmdb_symlink_is_followed_but_a_fifo_is_skipped(tmp_path: Path) -> None:
    from broker.policy import Intel
    from broker.tools.check_ip_reputation.lookup import _open_intel

    database = tmp_path / "intel.db"
    database.write_bytes(b"stand-in")
    real = tmp_path / "GeoLite2-ASN.mmdb"
    real.write_bytes(b"stand-in")
    (tmp_path / "asn.mmdb").symlink_to(real)
    os.mkfifo(tmp_path / "country.mmdb")
    intel = Intel(
        database=str(database), asn_mmdb=str(tmp_path / "asn.mmdb"), country_mmdb=str(tmp_path / "country.mmdb")
    )
    fds, enrich, notes = _bounded(lambda: _open_intel(intel), tmp_path / "country.mmdb")
    for fd in fds:
        os.close(fd)
    assert (
        enrich == ["asn"]
        and len(fds) == 2
        and notes == ["country enrichment unavailable (its database cannot be opened)"]
    )


def test_compiling_refuses_a_fifo_feed_and_a_symlinked_previous_database(tmp_path: Path) -> None:
    from bastion_wire.intel_db import IntelDatabaseError
    from broker.intel.compile import FeedSource, compile_feeds

    feed = tmp_path / "feed.netset"
    feed.write_text("192.0.2.0/24\n")
    output = tmp_path / "intel.db"
    compile_feeds([FeedSource("f", str(feed), "netset", "x", 50)], str(output), now=100)
    fifo = tmp_path / "fifo.netset"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="FIFO"):
        _bounded(
            lambda: compile_feeds([FeedSource("f", str(fifo), "netset", "x", 50)], str(tmp_path / "other.db"), now=100),
            fifo,
        )
    link = tmp_path / "previous.db"
    link.symlink_to(output)
    with pytest.raises(IntelDatabaseError, match="symbolic link"):
        compile_feeds(
            [FeedSource("f", str(feed), "netset", "x", 50)], str(tmp_path / "third.db"), previous=str(link), now=200
        )
