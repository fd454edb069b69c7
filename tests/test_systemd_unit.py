"""The systemd units in deploy/: exposure score, key directives, consistency with the sandbox.

Everything here runs offline, with no systemd as PID 1 (CI runs in a container):
`systemd-analyze security --offline=true FILE` scores a unit file as written,
`systemd-analyze verify FILE` parses it and its dependencies, and
`systemd-analyze syscall-filter` lists the system call groups, which lets the
tests check that the unit's SystemCallFilter= allows every system call the
workers' own seccomp profiles allow (the unit's filter is inherited by the
workers and stacks under theirs, so anything it refused would break them).
`.ci/run` installs Debian's `systemd` package for systemd-analyze; without it
the tests skip.

Run with `-s` to see the measured exposure and the items that remain.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
SERVER_UNIT = DEPLOY / "bastion.service"
INTEL_UNIT = DEPLOY / "bastion-intel.service"
FETCH_UNIT = DEPLOY / "bastion-intel-fetch.service"
SERVICES = [SERVER_UNIT, INTEL_UNIT, FETCH_UNIT]
MAX_EXPOSURE = 1.5
PROFILES = sorted((ROOT / "sandbox_profiles").glob("*.toml"))

# What the broker itself calls to set a worker up, before the worker's own
# seccomp layer (workers/confine/*.py): namespaces, the empty root, capability
# and rlimit changes, Landlock, loading and probing seccomp (libseccomp asks
# the kernel with seccomp() which actions it supports), pidfds, socketpairs.
SETUP_SYSCALLS = {
    "unshare",
    "clone",
    "mount",
    "umount2",
    "pivot_root",
    "capget",
    "capset",
    "prctl",
    "prlimit64",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "seccomp",
    "pidfd_open",
    "pidfd_send_signal",
    "socketpair",
    "sendmsg",
    "recvmsg",
    "wait4",
    "kill",
    "fdatasync",
    "flock",
    "execve",
}
# Profile namespace names -> RestrictNamespaces= names.
NAMESPACE_NAMES = {"mount": "mnt", "pid": "pid", "net": "net", "ipc": "ipc", "uts": "uts", "cgroup": "cgroup"}
DANGEROUS_CAPABILITIES = {
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_PTRACE",
    "CAP_SYS_BOOT",
    "CAP_SYS_TIME",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_MKNOD",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_SYSLOG",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_AUDIT_CONTROL",
    "CAP_LINUX_IMMUTABLE",
    "CAP_SETFCAP",
}


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`; .ci/run installs it)")
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_systemd_analyze(), "--no-pager", *args], capture_output=True, text=True, timeout=120)


def _directives(unit: Path) -> dict[str, list[str]]:
    """Every assignment of the unit file, in order, with line continuations joined."""
    text = unit.read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _one(unit: Path, key: str) -> str:
    values = _directives(unit).get(key)
    assert values, f"{unit.name}: {key}= is missing"
    return values[-1]


def _syscall_groups() -> dict[str, set[str]]:
    """@group -> every system call in it, nested groups expanded."""
    proc = _run(["syscall-filter"])
    assert proc.returncode == 0, proc.stderr
    members: dict[str, list[str]] = {}
    current = None
    for line in proc.stdout.splitlines():
        if line.startswith("@"):
            current = line.split()[0]
            members[current] = []
        elif current and line.startswith(" ") and line.strip() and not line.strip().startswith("#"):
            members[current].append(line.split()[0])
        elif not line.strip():
            current = None

    def expand(name: str, seen: frozenset[str]) -> set[str]:
        calls: set[str] = set()
        for member in members.get(name, []):
            if member.startswith("@"):
                if member not in seen:
                    calls |= expand(member, seen | {member})
            else:
                calls.add(member)
        return calls

    return {name: expand(name, frozenset({name})) for name in members}


def _allowed_syscalls(unit: Path) -> set[str]:
    """The unit's SystemCallFilter= as systemd applies it: an allow list, minus the ~ lines."""
    groups = _syscall_groups()
    lines = _directives(unit)["SystemCallFilter"]
    assert not lines[0].startswith("~"), "the first SystemCallFilter= must be an allow list"

    def names(words: str) -> set[str]:
        calls: set[str] = set()
        for word in words.split():
            if word.startswith("@"):
                assert word in groups, f"unknown system call group {word}"
                calls |= groups[word]
            else:
                calls.add(word)
        return calls

    allowed: set[str] = set()
    for line in lines:
        if line.startswith("~"):
            allowed -= names(line[1:])
        else:
            allowed |= names(line)
    return allowed


def _profile_syscalls() -> dict[str, set[str]]:
    found = {}
    for path in PROFILES:
        seccomp = tomllib.loads(path.read_text()).get("seccomp", {})
        calls = set(seccomp.get("allow", [])) | set(seccomp.get("errno", {}))
        calls |= {rule["syscall"] for rule in seccomp.get("conditional", [])}
        found[path.stem] = calls
    return found


def _security(unit: Path, tmp_path: Path) -> tuple[float, list[dict[str, str]]]:
    copy = tmp_path / unit.name
    shutil.copyfile(unit, copy)
    text = _run(["security", "--offline=true", str(copy)])
    assert text.returncode == 0, text.stdout + text.stderr
    match = re.search(r"Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)", text.stdout)
    assert match, f"no overall exposure level in:\n{text.stdout}{text.stderr}"
    table = _run(["security", "--offline=true", "--json=short", str(copy)])
    assert table.returncode == 0, table.stderr
    remaining = [item for item in json.loads(table.stdout) if item.get("exposure")]
    remaining.sort(key=lambda item: float(item["exposure"]), reverse=True)
    return float(match.group(1)), remaining


@pytest.mark.parametrize("unit", SERVICES, ids=lambda path: path.name)
def test_exposure_is_at_most_1_5(unit: Path, tmp_path: Path) -> None:
    exposure, remaining = _security(unit, tmp_path)
    print(f"\n{unit.name}: systemd-analyze security --offline=true: overall exposure {exposure}")
    for item in remaining[:10]:
        print(f"  {item['exposure']:>4}  {item['name']:<36} {item['description']}")
    assert exposure <= MAX_EXPOSURE, f"{unit.name}: exposure {exposure} > {MAX_EXPOSURE}"
    # The same bound, as systemd-analyze itself enforces it (0-100 scale).
    copy = tmp_path / unit.name
    gate = _run(["security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(copy)])
    assert gate.returncode == 0, gate.stdout


@pytest.mark.parametrize("unit", [*SERVICES, DEPLOY / "bastion-intel.timer"], ids=lambda path: path.name)
def test_units_pass_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    # verify insists that ExecStart= binaries exist; /opt/bastion/venv is not
    # installed here, so the copies run /bin/true instead (the shell lines stay).
    for path in DEPLOY.glob("bastion*"):
        text = path.read_text().replace("/opt/bastion/venv/bin/bastion", "/bin/true")
        (tmp_path / path.name).write_text(text)
    proc = _run(["verify", "--man=no", str(tmp_path / unit.name)])
    findings = [line for line in (proc.stdout + proc.stderr).splitlines() if unit.name in line or "bastion" in line]
    if proc.returncode != 0 and not findings:
        # verify builds a unit manager in-process; a container that cannot even
        # do that (no /run, no unit directories) fails here before reading our file.
        pytest.skip(f"systemd-analyze verify cannot run on this machine: {proc.stderr.strip()[:300]}")
    assert not findings, "\n".join(findings)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_server_unit_type_identity_and_privileges() -> None:
    unit = SERVER_UNIT
    assert _one(unit, "Type") == "notify"
    assert _one(unit, "NotifyAccess") == "main"
    assert _one(unit, "ExecStart").startswith(
        "/opt/bastion/venv/bin/bastion serve --policy /etc/bastion/policy.toml --http "
    )
    # `systemctl reload`: SIGHUP re-reads the policy (tests/test_reload.py), never kills.
    assert _one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert _one(unit, "User") == "bastion"
    # Not root, and no capability in any set: every worker layer that needs
    # privilege gets it inside the worker's own user namespace.
    assert _one(unit, "CapabilityBoundingSet") == ""
    assert _one(unit, "AmbientCapabilities") == ""
    assert _one(unit, "NoNewPrivileges") == "yes"
    assert _one(unit, "PrivateUsers") == "yes"
    assert "Delegate" not in _directives(unit)  # a non-root broker makes no worker cgroups to delegate
    assert _one(unit, "OOMPolicy") == "continue"  # a worker killed for memory must not stop the service


@pytest.mark.parametrize("unit", SERVICES, ids=lambda path: path.name)
def test_filesystem_network_and_kernel_hardening(unit: Path) -> None:
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
        "UMask": "0077",
    }.items():
        assert _one(unit, key) == value, f"{unit.name}: {key}= should be {value}"
    families = set(" ".join(_directives(unit)["RestrictAddressFamilies"]).split())
    assert families and families <= {"AF_UNIX", "AF_INET", "AF_INET6"}, families
    assert not families & {"AF_PACKET", "AF_NETLINK"}
    capabilities = set(_one(unit, "CapabilityBoundingSet").split())
    assert not capabilities & DANGEROUS_CAPABILITIES, capabilities & DANGEROUS_CAPABILITIES


def test_server_unit_needs_no_network() -> None:
    # The socket is a path in /run/bastion: reachable from the host's sshd
    # through the filesystem, whatever network namespace the service is in.
    assert "--http unix:/run/bastion/mcp.sock" in _one(SERVER_UNIT, "ExecStart")
    assert _one(SERVER_UNIT, "PrivateNetwork") == "yes"
    assert _one(SERVER_UNIT, "RestrictAddressFamilies") == "AF_UNIX"
    assert _one(SERVER_UNIT, "IPAddressDeny") == "any"


def test_restrict_namespaces_lists_exactly_what_workers_unshare() -> None:
    allowed = set(_one(SERVER_UNIT, "RestrictNamespaces").split())
    needed = {"user"}  # a non-root broker adds a user namespace to each worker
    for path in PROFILES:
        unshare = tomllib.loads(path.read_text())["namespaces"]["unshare"]
        needed |= {NAMESPACE_NAMES[name] for name in unshare}
    assert allowed == needed
    for unit in (INTEL_UNIT, FETCH_UNIT):
        assert _one(unit, "RestrictNamespaces") == "yes"  # downloading and compiling feeds need none


def test_system_call_filter_allows_what_the_broker_and_every_worker_profile_use() -> None:
    allowed = _allowed_syscalls(SERVER_UNIT)
    missing = SETUP_SYSCALLS - allowed
    assert not missing, f"the broker's worker set-up needs {sorted(missing)}"
    for kind, calls in _profile_syscalls().items():
        missing = calls - allowed
        assert not missing, (
            f"the {kind} profile allows {sorted(missing)}, which bastion.service's SystemCallFilter= refuses"
        )
    # And what the unit keeps out: no module loading, clock, reboot, swap, raw I/O, ptrace, bpf.
    for refused in (
        "init_module",
        "finit_module",
        "clock_settime",
        "reboot",
        "swapon",
        "iopl",
        "ptrace",
        "bpf",
        "kexec_load",
    ):
        assert refused not in allowed, refused
    assert _one(SERVER_UNIT, "SystemCallErrorNumber") == "EPERM"


def test_feed_compile_has_no_network_and_download_runs_no_bastion_code() -> None:
    """The feed parser never runs with network access; the downloader never sees intel.db."""
    assert _one(INTEL_UNIT, "PrivateNetwork") == "yes"
    assert _one(INTEL_UNIT, "RestrictAddressFamilies") == "AF_UNIX"
    assert _one(INTEL_UNIT, "IPAddressDeny") == "any"
    assert _one(INTEL_UNIT, "Wants") == _one(INTEL_UNIT, "After") == FETCH_UNIT.name
    assert "/var/lib/bastion/feeds" in _one(INTEL_UNIT, "ReadOnlyPaths")
    assert _one(INTEL_UNIT, "ExecStart").startswith("/opt/bastion/venv/bin/bastion intel compile ")
    assert "bastion intel" not in " ".join(_directives(FETCH_UNIT)["ExecStart"])
    assert "PrivateNetwork" not in _directives(FETCH_UNIT)
    assert _one(FETCH_UNIT, "StateDirectory") == "bastion/feeds"
    assert "/var/lib/bastion/intel.db" in _one(FETCH_UNIT, "InaccessiblePaths")
    assert _one(DEPLOY / "bastion-intel.timer", "Unit") == INTEL_UNIT.name


@pytest.mark.parametrize("unit", [INTEL_UNIT, FETCH_UNIT], ids=lambda path: path.name)
def test_intel_units_allow_no_sandbox_system_calls(unit: Path) -> None:
    allowed = _allowed_syscalls(unit)
    for refused in (
        "mount",
        "pivot_root",
        "chroot",
        "setuid",
        "setresuid",
        "capset",
        "landlock_restrict_self",
        "ptrace",
        "bpf",
    ):
        assert refused not in allowed, refused
    # unshare/clone stay in @system-service; RestrictNamespaces=yes refuses every namespace flag.
