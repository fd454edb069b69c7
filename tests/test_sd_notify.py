"""Type=notify: READY=1 only once the policy, the audit log and every worker sandbox are
set up (so systemd never routes traffic to a server that would refuse), STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

from tests.conftest import BASTION, SAMPLE_LOGS, read_audit, write_policy


def notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    return sock, path


def test_ready_after_set_up_and_stopping_on_sigterm(tmp_path: Path) -> None:
    sock, path = notify_socket(tmp_path)
    policy = write_policy(tmp_path, [SAMPLE_LOGS / "auth.log"])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": path}
    proc = subprocess.Popen(
        [str(BASTION), "serve", "--policy", str(policy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert sock.recv(256) == b"READY=1"
        assert read_audit(tmp_path / "audit.jsonl")[0]["event"] == "server_start"  # written before READY
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(256) == b"STOPPING=1"
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert proc.returncode == 0


def test_no_ready_when_the_server_refuses_to_start(tmp_path: Path) -> None:
    sock, path = notify_socket(tmp_path)
    sock.settimeout(0.5)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    policy = write_policy(tmp_path, [SAMPLE_LOGS / "auth.log"], audit=blocker / "audit.jsonl")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": path}
    proc = subprocess.run(
        [str(BASTION), "serve", "--policy", str(policy)],
        capture_output=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 3
    try:
        data = sock.recv(256)
    except TimeoutError:
        data = b""
    finally:
        sock.close()
    assert data == b""
