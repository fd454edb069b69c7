"""The workers' account: the shipped sysusers.d files create what the code looks up, and a
root broker without it says that its workers share uid 65534 (broker/sandbox/plan.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from broker.sandbox import plan
from tests.conftest import BASTION, ROOT

SYSUSERS = ROOT / "deploy" / "sysusers.d"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only a root broker switches workers' uid")


def _passwd_made_by_sysusers(conf: Path, root: Path) -> list[list[str]]:
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is not installed")
    (root / "etc").mkdir(parents=True)
    with conf.open("rb") as stdin:  # with --root, file arguments would be looked up inside the root
        subprocess.run(["systemd-sysusers", f"--root={root}", "-"], stdin=stdin, check=True, capture_output=True)
    return [line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()]


def test_the_worker_account_file_creates_an_account_without_login(tmp_path: Path) -> None:
    entries = _passwd_made_by_sysusers(SYSUSERS / "bastion-worker.conf", tmp_path)
    (entry,) = [entry for entry in entries if entry[0] == plan.DEFAULT_WORKER_USER]
    uid, shell, home = int(entry[2]), entry[6], entry[5]
    assert 0 < uid < 1000 and uid != plan.NOBODY  # a system account of its own
    assert shell == "/usr/sbin/nologin" and home == "/nonexistent"


def test_the_service_account_file_matches_the_unit(tmp_path: Path) -> None:
    entries = _passwd_made_by_sysusers(SYSUSERS / "bastion.conf", tmp_path)
    unit = (ROOT / "deploy" / "bastion.service").read_text()
    (entry,) = [entry for entry in entries if entry[0] == "bastion"]
    assert "User=bastion" in unit and entry[6] == "/usr/sbin/nologin"


@root_only
def test_a_fallback_to_nobody_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, "worker_ids", lambda user: (plan.NOBODY, plan.NOBODY))
    assert "uid 65534 (nobody)" in plan.shared_uid_warning("auto")
    assert "make worker-user" in plan.shared_uid_warning("nobody")


@root_only
def test_a_dedicated_account_is_not_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, "worker_ids", lambda user: (998, 998))
    assert plan.shared_uid_warning("auto") == ""


def test_no_warning_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert plan.shared_uid_warning("auto") == ""


@root_only
def test_doctor_warns_when_workers_share_nobody() -> None:
    doctor = subprocess.run([str(BASTION), "doctor"], capture_output=True, text=True, timeout=120)
    if plan.worker_ids("auto")[0] == plan.NOBODY:
        assert "warning: workers run as uid 65534 (nobody)" in doctor.stdout, doctor.stdout
    else:
        assert "uid 65534" not in doctor.stdout, doctor.stdout
