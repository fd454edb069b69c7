"""Sandbox set-up as an operator sees it: doctor, fail-closed start, explicit downgrades,
profile validation, and what the broker puts into a worker's root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from broker.sandbox.binds import bind_list, shared_libraries
from broker.sandbox.profile import ProfileError, decode_profile, load_profile
from tests.conftest import BASTION, ROOT, SAMPLE_LOGS, read_audit, write_policy

PROFILES = ROOT / "sandbox_profiles"
AUTH = SAMPLE_LOGS / "auth.log"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the full layer set needs root (see test_rootless.py)")


def bastion(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(BASTION), *args], capture_output=True, timeout=timeout, input=b"")


def profiles_copy(tmp_path: Path, edit: tuple[str, str] | None = None) -> Path:
    folder = tmp_path / "profiles"
    shutil.copytree(PROFILES, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    if edit:
        grep = folder / "grep.toml"
        text = grep.read_text()
        assert edit[0] in text
        grep.write_text(text.replace(edit[0], edit[1], 1))
    return folder


@needs_root
def test_doctor_reports_every_layer_active_here() -> None:
    proc = bastion("doctor", "--policy", str(ROOT / "examples" / "policy.toml"))
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    rows = [line.split() for line in out.splitlines()[2:14]]
    assert [row[0] for row in rows] == list(load_profile("grep").layers.__struct_fields__)
    assert all(row[1] == "yes" and row[-1] == "yes" for row in rows), out
    assert "the policy can be served" in out


@needs_root
def test_a_required_layer_that_cannot_apply_means_refusal(tmp_path: Path) -> None:
    # An allowlist libseccomp cannot compile leaves the seccomp layer unavailable.
    profiles = profiles_copy(tmp_path, ('"read", "write",', '"read", "write", "no_such_syscall",'))
    policy = write_policy(tmp_path, [AUTH])
    proc = bastion("serve", "--policy", str(policy), "--profiles-dir", str(profiles))
    assert proc.returncode == 3 and proc.stdout == b""
    assert b"refusing to serve" in proc.stderr and b"'seccomp'" in proc.stderr
    doctor = bastion("doctor", "--policy", str(policy), "--profiles-dir", str(profiles))
    assert doctor.returncode == 3 and b"seccomp: cannot compile" in doctor.stdout


@needs_root
@pytest.mark.anyio
async def test_an_explicit_downgrade_serves_and_is_audited(tmp_path: Path) -> None:
    profiles = profiles_copy(tmp_path, ('"read", "write",', '"read", "write", "no_such_syscall",'))
    policy = write_policy(tmp_path, [AUTH])
    policy.write_text(policy.read_text().replace("[limits]", '[sandbox]\nbest_effort = ["seccomp"]\n\n[limits]'))
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=str(BASTION),
        args=["serve", "--policy", str(policy), "--profiles-dir", str(profiles)],
        env={"PATH": "/usr/bin:/bin"},
    )
    async with Client(params, read_timeout_seconds=30) as client:
        result = await client.call_tool("query_logs", {"log_path": str(AUTH), "pattern": "sshd", "max_lines": 1})
    assert not result.is_error
    start = read_audit(tmp_path / "audit.jsonl")[0]
    assert start["event"] == "server_start"
    assert any("skipped:seccomp" in entry for entry in start["downgraded"]["grep"])


@needs_root
def test_sandbox_run_confines_a_payload(tmp_path: Path) -> None:
    payload = tmp_path / "whoami.py"
    payload.write_text("import os\nprint(os.getuid(), os.getgid(), os.getpid())\n")
    proc = bastion("sandbox", "run", "--profile", "grep", "--python", str(payload))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [b"65534", b"65534", b"1"]
    assert b"exited with status 0" in proc.stderr and b"seccomp" in proc.stderr


def test_sandbox_run_needs_a_program_or_a_payload() -> None:
    proc = bastion("sandbox", "run", "--profile", "grep")
    assert proc.returncode == 2 and b"either -- ARGV or --python" in proc.stderr


def test_profiles_reject_unknown_keys_and_relative_paths() -> None:
    base = (PROFILES / "grep.toml").read_text()
    with pytest.raises(ProfileError, match="unknown_key"):
        decode_profile((base + "\nunknown_key = 1\n").encode(), "test")
    with pytest.raises(ProfileError, match="must be an absolute path"):
        decode_profile(base.replace('executables = ["/usr/bin/grep"]', 'executables = ["grep"]').encode(), "test")
    with pytest.raises(ProfileError, match="execve is allowed but the profile has no executables"):
        decode_profile(base.replace('executables = ["/usr/bin/grep"]', "executables = []").encode(), "test")
    with pytest.raises(ProfileError, match="no sandbox profile named"):
        load_profile("../grep")


def test_worker_root_holds_only_the_engine_and_its_libraries(tmp_path: Path) -> None:
    libraries = shared_libraries("/usr/bin/grep")
    assert any(path.endswith("/libc.so.6") for path in libraries)
    assert any("ld-linux" in path for path in libraries)
    binds = bind_list(["/usr/bin/grep"], [])
    assert binds == sorted({"/usr/bin/grep", *libraries})
    assert not any(path.startswith(("/etc", "/home", "/root", "/proc", "/dev", "/var")) for path in binds)
    static = tmp_path / "static"
    subprocess.run(
        ["gcc", "-static", "-O1", "-x", "c", "-o", str(static), "-"],
        input=b"int main(void){return 0;}",
        check=True,
        timeout=120,
    )
    assert shared_libraries(str(static)) == []


@needs_root
def test_sandbox_run_hands_over_regular_files_only(tmp_path: Path) -> None:
    for path in (tmp_path, Path("/dev/null")):
        proc = bastion("sandbox", "run", "--profile", "grep", "--pass-fd", str(path), "--", "/usr/bin/true")
        assert proc.returncode == 2, proc.stderr
        assert b"not a regular file" in proc.stderr and b"layers:" not in proc.stderr  # no worker ran


@needs_root
@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["grep", "resource"])
async def test_a_worker_refuses_a_descriptor_that_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    """Second line of defence behind the allowlist's S_ISREG check: a directory
    descriptor would reach host metadata through `..`, so the worker refuses it."""
    from bastion_wire.protocol import SearchRequest, TailRequest
    from broker.pool.launcher import spawn_one
    from broker.pool.worker_process import start_worker
    from broker.sandbox.host import cgroup_host
    from broker.sandbox.plan import build_plan

    cgroups = cgroup_host()
    profile = load_profile(kind, None)
    plan = build_plan(profile, "auto", [], cgroups, (), run_mode=False)
    request = SearchRequest("x", 10, 100) if kind == "grep" else TailRequest(100, 100)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        worker = await start_worker(await spawn_one(plan, cgroups))
        result = await worker.call(request, fd, deadline_s=20, max_bytes=1000)
    finally:
        os.close(fd)
        cgroups.close()
    assert result.failure is not None and result.failure.code == "bad_request", result
    assert "not a regular file" in result.failure.message
    assert result.lines == [] and (result.stopped_after_reply or result.exit_code == 0) and result.signal is None


def test_cpu_limit_is_never_below_the_policy_timeout() -> None:
    """RLIMIT_CPU backs up the wall-clock deadline; it must not cut a scan the policy allows."""
    from broker.sandbox.host import _cpu_at_least

    profile = load_profile("grep", None)
    assert _cpu_at_least(profile, 100).rlimits.cpu_s == 101
    assert _cpu_at_least(profile, 5).rlimits.cpu_s == profile.rlimits.cpu_s == 20
    assert _cpu_at_least(profile, 3600).rlimits.cpu_s == 3600
    assert profile.rlimits.cpu_s == 20  # the shipped profile itself is untouched
