"""Something planted where a live server's files should be (issue 21.1).

A FIFO where the audit log was must not freeze the broker: every call is
refused at once with the audit-down message, tools/list still answers, and
once the FIFO is gone the next call succeeds in a new audit file that
continues the chain (`bastion audit verify` accepts old and new together).
Unit-level cases (symlink, directory, foreign owner) are in test_audit_log.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from broker.service import AUDIT_DOWN
from tests.conftest import BASTION, SAMPLE_LOGS, read_audit, wait_no_workers, write_policy
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
    server = RawServer(write_policy(tmp_path, [AUTH]))
    try:
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
        assert server.proc.stdin is not None
        server.proc.stdin.close()
        code, stderr = server.wait_exit()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    assert code == 0
    assert "is a FIFO" in stderr  # the operator is told why calls were refused
    records = read_audit(rotated) + read_audit(audit)
    begins = [r["seq"] for r in records if r["event"] == "begin"]
    assert begins == [r["call"] for r in records if r["event"] == "end"] and len(begins) == 2  # the refused call has neither
    assert read_audit(audit)[0]["event"] == "audit_continued"
    assert wait_no_workers() == []
    verify = subprocess.run([str(BASTION), "audit", "verify", str(rotated), str(audit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
