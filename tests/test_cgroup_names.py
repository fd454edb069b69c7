"""Which brokers' cgroups a starting broker removes as stale, and which it leaves.

The cgroup tree is shared by every pid namespace on the host, so a broker must
never take another namespace's broker (whose pid it cannot see) for a dead one,
nor kill what runs in cgroups it cannot prove are stale. Run on plain
directories: _remove_stale only lists, kills and removes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.sandbox import cgroup

OUR_NS = os.stat("/proc/self/ns/pid").st_ino
DEAD_PID = 2**22 + 7  # above the kernel's pid_max ceiling: no process has it


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that a wrong cleanup would kill (listed in a cgroup.procs)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _base(parent: Path, name: str, members: list[int] | None = None) -> Path:
    """A broker base with one worker cgroup; members make it look populated."""
    worker = parent / name / "w1"
    worker.mkdir(parents=True)
    if members is not None:
        (worker / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in members))
    return parent / name


def test_the_tag_names_the_namespace_the_pid_and_its_start_time() -> None:
    tag = cgroup.broker_tag()
    namespace, pid, started = tag.removeprefix("bastion-").split("-")
    assert (int(namespace), int(pid)) == (OUR_NS, os.getpid())
    assert int(started) == cgroup._start_time(os.getpid())
    assert cgroup.broker_tag(os.getpid()) == tag
    assert cgroup._is_stale(tag) is False  # this broker is alive


def test_a_dead_broker_of_this_namespace_is_removed(tmp_path: Path) -> None:
    base = _base(tmp_path, f"bastion-{OUR_NS}-{DEAD_PID}-1234")
    cgroup._remove_stale(tmp_path)
    assert not base.exists()


def test_a_reused_pid_is_told_apart_by_its_start_time(tmp_path: Path) -> None:
    started = cgroup._start_time(os.getpid())
    assert started is not None
    reused = _base(tmp_path, f"bastion-{OUR_NS}-{os.getpid()}-{started + 1}")  # an earlier holder of our pid
    live = _base(tmp_path, cgroup.broker_tag())
    cgroup._remove_stale(tmp_path)
    assert not reused.exists()
    assert (live / "w1").is_dir()


def test_another_namespaces_broker_is_left_alone(tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    """Its pid is not in our /proc whether it lives or not: nothing is removed or killed."""
    other = _base(tmp_path, f"bastion-{OUR_NS + 1}-{DEAD_PID}-1234", members=[bystander.pid])
    empty = _base(tmp_path, f"bastion-{OUR_NS + 1}-{DEAD_PID + 1}-1234")
    cgroup._remove_stale(tmp_path)
    assert (other / "w1" / "cgroup.procs").exists()
    assert (empty / "w1").is_dir()  # even empty: it may be a worker's cgroup about to be joined
    assert bystander.poll() is None


def test_an_old_pid_only_name_is_never_touched(tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    """bastion-PID (before the namespace was in the name) cannot be placed: neither its
    populated cgroups nor its empty ones (a worker's, about to be joined) are removed."""
    populated = _base(tmp_path, f"bastion-{DEAD_PID}", members=[bystander.pid])
    empty = _base(tmp_path, f"bastion-{DEAD_PID + 1}")
    cgroup._remove_stale(tmp_path)
    assert (populated / "w1" / "cgroup.procs").exists()
    assert bystander.poll() is None
    assert (empty / "w1").is_dir()


@pytest.mark.parametrize("name", ["bastion-x", "bastion-1-2", "bastion-1-2-3-4", "bastion--1-2", "bastion-soc"])
def test_names_of_no_known_shape_are_left_alone(tmp_path: Path, name: str) -> None:
    base = _base(tmp_path, name)
    cgroup._remove_stale(tmp_path)
    assert (base / "w1").is_dir()
