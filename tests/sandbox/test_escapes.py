"""Escape attempts by static C programs confined exactly as a grep worker's engine.

Each case runs one subcommand of payloads/attempt.c under
`bastion sandbox run --profile grep` (and again under the journal profile, which
runs the same engine) and states which fates count as
contained: the program saw its call fail ("blocked"), seccomp killed it
("SIGSYS"), a limit killed it ("SIGKILL"), or the wall-clock timeout did
("timeout"). Covered: files, network, processes, privileges, resources.
After every run no listener may have been reached, no process of the run may
be alive, and the target files must be untouched.

A known weakness would be kept as a strict xfail (Attempt.known_weakness).
Directory descriptors were one: `..` from a handed directory reaches host
metadata, since Landlock does not mediate stat/readlink. Now only regular files
are ever handed over (the CLI and the worker both refuse anything else), so
those attempts expect "refused".
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from pathlib import Path

import pytest

from broker.sandbox.profile import load_profile
from tests.sandbox.conftest import HANDED_TEXT
from tests.sandbox.harness import Attempt, Results, SandboxEnv, classify, execute, kill_all, lingering
from tests.sandbox.listeners import Listeners

pytestmark = [pytest.mark.sandbox]

BLOCKED = frozenset({"blocked"})
SIGSYS = frozenset({"SIGSYS"})
REFUSED = frozenset({"refused"})  # the directory is never handed over


def grep(
    attempt_id: str,
    expected: frozenset[str],
    *args: str,
    pass_fd: str | None = None,
    program: str = "attempt",
    profiles: str = "shipped",
    timeout_s: float = 10.0,
    detail: str = "",
    known_weakness: str = "",
) -> Attempt:
    """An attempt.c subcommand (or another static program) confined as the grep profile."""
    return Attempt(
        id=attempt_id,
        profile="grep",
        expected=expected,
        args=args,
        program=program,
        pass_fd=pass_fd,
        profiles=profiles,
        timeout_s=timeout_s,
        detail=detail,
        known_weakness=known_weakness,
    )


FILES = [
    grep("files/read-etc-shadow", BLOCKED, "read", "/etc/shadow"),
    grep("files/read-etc-passwd", BLOCKED, "read", "/etc/passwd"),
    grep("files/open-root-home", BLOCKED, "opendir", "/root"),
    grep("files/read-audit-log", BLOCKED, "read", "{audit_log}"),
    grep("files/read-unhanded-log", BLOCKED, "read", "{unhanded_log}"),
    grep("files/read-proc-1-root", BLOCKED, "read", "/proc/1/root/etc/passwd"),
    grep("files/list-proc-self-fd", BLOCKED, "opendir", "/proc/self/fd"),
    grep("files/list-root-dir", BLOCKED, "opendir", "/"),
    grep("files/dirfd-open-secret", REFUSED, "dirfd-open", "secret.txt", pass_fd="secret_dir"),
    grep("files/dirfd-climb-read-passwd", REFUSED, "dirfd-open", "{up}etc/passwd", pass_fd="secret_dir"),
    grep("files/dirfd-stat-host-shadow", REFUSED, "dirfd-stat", "{up}etc/shadow", pass_fd="secret_dir"),
    grep("files/dirfd-stat-host-pid", REFUSED, "dirfd-stat", "{up}proc/{test_pid}", pass_fd="secret_dir"),
    grep("files/dirfd-readlink-host-proc", REFUSED, "dirfd-readlink", "{up}proc/self", pass_fd="secret_dir"),
    grep("files/create-in-root", BLOCKED, "create", "/pwned"),
    grep("files/create-in-tmp", BLOCKED, "create", "/tmp/pwned"),
    grep("files/mknod-device", SIGSYS, "mknod"),
    grep("files/symlink", SIGSYS, "symlink"),
    grep("files/hardlink", SIGSYS, "hardlink", "{handed_log}"),
    grep("files/rename", SIGSYS, "rename", "{handed_log}"),
    grep("files/write-handed-fd", BLOCKED, "fd-write", pass_fd="handed_log", detail="EBADF"),
    grep("files/ftruncate-handed-fd", SIGSYS, "fd-truncate", pass_fd="handed_log"),
    grep("files/mmap-handed-fd-writable", BLOCKED, "fd-mmap-write", pass_fd="handed_log"),
    grep("files/reopen-handed-fd-rw", BLOCKED, "fd-reopen", pass_fd="handed_log"),
]

NETWORK = [
    grep("net/tcp-127.0.0.1", SIGSYS, "tcp4", "{tcp4_port}"),
    grep("net/tcp-::1", SIGSYS, "tcp6", "{tcp6_port}"),
    grep("net/udp-sendto-127.0.0.1", SIGSYS, "udp4", "{udp4_port}"),
    grep("net/unix-path-connect", SIGSYS, "unix-path", "{unix_path}"),
    grep("net/unix-abstract-connect", SIGSYS, "unix-abstract", "{abstract_name}"),
    grep("net/raw-socket", SIGSYS, "raw"),
    grep("net/packet-socket", SIGSYS, "packet"),
    grep("net/netlink-socket", SIGSYS, "netlink"),
]

PROCESSES = [
    grep("proc/kill-minus-1", BLOCKED, "kill-all"),
    grep("proc/kill-test-pid", BLOCKED, "kill-pid", "{test_pid}"),
    grep("proc/kill-own-group", BLOCKED, "kill-pgrp"),
    grep("proc/ptrace-attach-test", SIGSYS, "ptrace", "{test_pid}"),
    grep("proc/process-vm-readv-test", SIGSYS, "vm-read", "{test_pid}"),
    grep("proc/see-host-pids", BLOCKED, "host-pids", "{test_pid}"),
    grep("proc/fork-bomb", BLOCKED, "fork-bomb", detail="EAGAIN"),
    grep("proc/orphan-left-behind", BLOCKED, "orphan"),
    grep("proc/exec-shell", BLOCKED, "exec", "/bin/sh", detail="ENOENT"),
    grep("proc/exec-setuid-root-copy", BLOCKED, "euid", program="setuid", detail="euid 65534"),
    grep("proc/prctl", SIGSYS, "prctl"),
]

PRIVILEGES = [
    grep(f"priv/{name}", SIGSYS, name)
    for name in (
        "setuid",
        "capset",
        "mount",
        "umount",
        "unshare",
        "setns",
        "pivot-root",
        "chroot",
        "keyctl",
        "bpf",
        "perf",
        "userfaultfd",
        "io-uring",
        "init-module",
        "kexec",
        "personality",
        "reboot",
        "tiocsti",
        "clock-settime",
        "clone-newuser",
        "x32",
        "int80",
    )
] + [
    grep("priv/clone3", BLOCKED, "clone3", detail="ENOSYS"),
    grep("priv/raise-rlimit-cpu", BLOCKED, "prlimit-raise", detail="EPERM"),
]

RESOURCES = [
    grep("res/cpu-loop", frozenset({"SIGKILL"}), "cpu", profiles="tight", timeout_s=20),
    grep("res/malloc-2gib", BLOCKED, "malloc-2g", detail="ENOMEM"),
    grep("res/memory-touch-2gib", frozenset({"SIGKILL", "blocked"}), "memory-touch"),
    grep("res/memory-touch-tight-cgroup", frozenset({"SIGKILL"}), "memory-touch", profiles="tight"),
    grep("res/disk-write-handed-dir", REFUSED, "dirfd-create", "pwned.txt", pass_fd="secret_dir"),
    grep("res/fd-exhaustion", BLOCKED, "fd-exhaust", str(load_profile("grep").rlimits.open_files), detail="EMFILE"),
    grep("res/hang", frozenset({"timeout"}), "hang", timeout_s=2),
]

GREP = FILES + NETWORK + PROCESSES + PRIVILEGES + RESOURCES


def _for_journal(args: tuple[str, ...]) -> tuple[str, ...]:
    """An attempt's arguments under the journal profile: its own descriptor limit."""
    if args[:1] == ("fd-exhaust",):
        return ("fd-exhaust", str(load_profile("journal").rlimits.open_files))
    return args


# The journal worker kind runs the same engine under grep's profile plus fstatfs (and its
# own limits): every attempt again under it.
ALL = GREP + [dataclasses.replace(attempt, profile="journal", args=_for_journal(attempt.args)) for attempt in GREP]


def _param(attempt: Attempt) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=attempt.known_weakness)] if attempt.known_weakness else []
    return pytest.param(attempt, id=f"{attempt.id}[{attempt.profile}]", marks=marks)


@pytest.mark.parametrize("attempt", [_param(attempt) for attempt in ALL])
def test_escape_attempt(attempt: Attempt, sandbox_env: SandboxEnv, listeners: Listeners, results: Results) -> None:
    execute(attempt, sandbox_env, listeners, results, HANDED_TEXT)


def test_attempt_ids_are_unique() -> None:
    ids = [attempt.id for attempt in GREP]
    assert len(ids) == len(set(ids))
    assert {attempt.profile for attempt in ALL} == {"grep", "journal"}


def test_setuid_copy_really_is_setuid_outside_the_sandbox(programs: dict[str, Path], results: Results) -> None:
    """Control: outside the sandbox the same file does give euid 0, so the in-sandbox result means something."""
    command = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", str(programs["setuid"]), "euid"]
    proc = subprocess.run(command, capture_output=True, timeout=30, cwd="/")
    observed = classify(proc.returncode, proc.stdout.decode(errors="replace"), "")
    results.record("control/setuid-copy-outside-sandbox", "none (host)", "escaped", observed.detail, "works (control)")
    assert observed.outcome == "escaped" and "euid 0" in observed.detail, observed


def test_listeners_do_detect_a_real_connection(listeners: Listeners) -> None:
    """Control: the "no listener was reached" check after each attempt can see a hit."""
    with socket.create_connection(("127.0.0.1", int(listeners.values["tcp4_port"])), timeout=5):
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(b"ping", ("127.0.0.1", int(listeners.values["udp4_port"])))
    hits = listeners.hits()
    assert [hit.split(":")[0] for hit in hits] == ["tcp4", "udp4"], hits
    assert listeners.hits() == []


def test_leftover_check_does_see_a_running_program(programs: dict[str, Path]) -> None:
    """Control: the "nothing left behind" check after each attempt finds a live attempt process."""
    proc = subprocess.Popen([str(programs["attempt"]), "hang"], stdout=subprocess.DEVNULL)
    try:
        found = lingering(str(programs["attempt"].parent))
        assert proc.pid in [p.pid for p in found]
        kill_all(found)
    finally:
        proc.kill()
        proc.wait(timeout=10)
