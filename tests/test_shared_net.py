"""The launcher's shared empty network namespace (profile `namespaces.shared_net`).

Workers forked by one launcher are born in one empty network namespace the
launcher made, instead of a new one each. Checked here: the profile loader
refuses to share unless seccomp refuses every socket call and Landlock scopes
abstract sockets; two workers share exactly that namespace, not the host's, and
it holds only a loopback interface that is down; a worker cannot reach an
abstract-socket listener in that very namespace, neither through its channel nor
with a new socket; a profile that does not share still gets its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from broker.pool.launcher import Launcher
from broker.pool.worker_process import Worker, start_worker
from broker.sandbox.cgroup import CgroupHost
from broker.sandbox.host import cgroup_host
from broker.sandbox.plan import build_plan
from broker.sandbox.profile import ProfileError, decode_profile, load_profile, profile_names
from tests.test_pid_one import read_line, run_payload

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the shared namespace is made only as root")
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("own_workers")]  # they wait for a SIGSYS
SHIPPED = Path(__file__).resolve().parents[1] / "sandbox_profiles"


def net_inode(pid: int | str) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


# --- the profile loader: sharing only where a worker cannot use the namespace -------------


def _grep_with(old: str, new: str) -> bytes:
    text = (SHIPPED / "grep.toml").read_text()
    assert old in text
    return text.replace(old, new, 1).encode()


@pytest.mark.parametrize("call", ["socket", "socketpair", "connect", "bind", "listen", "accept4"])
def test_sharing_is_refused_if_seccomp_allows_a_socket_call(call: str) -> None:
    with pytest.raises(ProfileError, match=f"shared_net needs seccomp to refuse {call}"):
        decode_profile(_grep_with('"read", "write",', f'"read", "write", "{call}",'), "grep.toml")


def test_sharing_is_refused_if_a_socket_call_only_fails_with_an_errno() -> None:
    with pytest.raises(ProfileError, match="refuse socket"):
        decode_profile(_grep_with('errno = { clone3 = "ENOSYS"', 'errno = { socket = "EPERM", clone3 = "ENOSYS"'), "g")


def test_sharing_is_refused_without_the_abstract_socket_scope() -> None:
    data = _grep_with('scopes = ["abstract_unix_socket", "signal"]', 'scopes = ["signal"]')
    with pytest.raises(ProfileError, match="abstract_unix_socket"):
        decode_profile(data, "grep.toml")


def test_sharing_is_refused_without_a_net_namespace() -> None:
    data = _grep_with('"mount", "pid", "net",', '"mount", "pid",')
    with pytest.raises(ProfileError, match='needs "net"'):
        decode_profile(data, "grep.toml")


def test_sharing_is_refused_if_a_wall_is_only_best_effort() -> None:
    with pytest.raises(ProfileError, match="required"):
        decode_profile(_grep_with('seccomp = "required"', 'seccomp = "best_effort"'), "grep.toml")


@pytest.mark.parametrize("kind", profile_names())
def test_every_shipped_profile_shares_and_passes_the_checks(kind: str) -> None:
    assert load_profile(kind).namespaces.shared_net


@pytest.mark.parametrize("downgraded", [["seccomp"], ["landlock"]])
def test_a_policy_downgrade_of_a_wall_stops_the_sharing(downgraded: list[str]) -> None:
    cgroups = cgroup_host()
    try:
        plan = build_plan(load_profile("grep"), "auto", downgraded, cgroups)
    finally:
        cgroups.close()
    assert not plan.shared_net


# --- real workers ------------------------------------------------------------------------

LISTENER = """
import ctypes, os, socket, sys
if ctypes.CDLL(None, use_errno=True).setns(os.open(sys.argv[1], os.O_RDONLY), 0x40000000) != 0:
    raise OSError(ctypes.get_errno(), "setns")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(b"\\0" + sys.argv[2].encode())
sock.settimeout(float(sys.argv[3]))
print(os.stat("/proc/self/ns/net").st_ino, flush=True)
try:
    print("RECEIVED", sock.recv(64), flush=True)
except TimeoutError:
    print("NOTHING", flush=True)
"""

# Aims at the listener first through the one socket it holds (its channel; sendto is
# allowlisted for frames), then with a new socket, which seccomp must kill.
REACH = """
import ctypes, errno, os, stat, struct
name = {name!r}
address = struct.pack("=H", 1) + b"\\0" + name.encode()
libc = ctypes.CDLL(None, use_errno=True)
print("NET", os.stat("/proc/self/ns/net").st_ino if os.path.exists("/proc/self/ns/net") else 0, flush=True)
for fd in range(32):
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            continue
    except OSError:
        continue
    if libc.sendto(fd, b"x", 1, 0, address, len(address)) >= 0:
        print("REACHED through fd", fd, flush=True)
print("SENDTO refused", errno.errorcode.get(ctypes.get_errno(), "?"), flush=True)
fd = libc.socket(1, 2, 0)
print("SOCKET returned", fd, flush=True)
"""


async def _two_workers(launcher: Launcher, kind: str = "grep") -> tuple[Worker, Worker, CgroupHost]:
    cgroups = cgroup_host()
    plan = build_plan(load_profile(kind), "auto", [], cgroups, (), run_mode=True)
    first = await start_worker(await launcher.spawn(plan, cgroups))
    second = await start_worker(await launcher.spawn(plan, cgroups))
    return first, second, cgroups


@needs_root
async def test_workers_share_one_empty_namespace_that_is_not_the_hosts() -> None:
    launcher = Launcher()
    first, second, cgroups = await _two_workers(launcher)
    try:
        shared = net_inode(first.pid)
        assert shared == net_inode(second.pid) != net_inode("self")
        links = subprocess.run(
            ["nsenter", f"--net=/proc/{first.pid}/ns/net", "ip", "-o", "link", "show"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert links.returncode == 0, links.stderr
        lines = links.stdout.strip().splitlines()
        assert len(lines) == 1 and ": lo:" in lines[0] and "state DOWN" in lines[0], lines
        assert ",UP" not in lines[0] and "<UP" not in lines[0]
    finally:
        for worker in (first, second):
            await worker.finish()
        await launcher.close()
        cgroups.close()


@needs_root
async def test_a_worker_cannot_reach_a_listener_in_the_shared_namespace() -> None:
    """The strongest case: the listener sits in the workers' own namespace (as another
    worker would, could it make one). Neither the channel nor a new socket reaches it."""
    read_end, write_end = os.pipe()
    launcher = Launcher(stdout=write_end)
    first, second, cgroups = await _two_workers(launcher)  # the launcher starts with the first
    os.close(write_end)
    name = f"bastion-test-{os.getpid()}"
    listener = subprocess.Popen(
        [sys.executable, "-c", LISTENER, f"/proc/{first.pid}/ns/net", name, "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        assert int(listener.stdout.readline()) == net_inode(second.pid)  # really the same namespace
        result = await run_payload(second, REACH.format(name=name))
        outputs = read_line(read_end).splitlines()  # both lines were printed before the kill
        if len(outputs) < 2:
            outputs.append(read_line(read_end))
        assert outputs[0].startswith("NET")
        assert outputs[1].startswith("SENDTO refused"), outputs
        assert result.signal == "SIGSYS"  # socket() killed it
        with anyio.fail_after(10):
            while listener.poll() is None:
                await anyio.sleep(0.05)
        assert listener.stdout.read().strip() == "NOTHING"
    finally:
        listener.kill()
        listener.wait(5)
        await first.finish()
        if not second.reaped:
            await second.finish()
        await launcher.close()
        cgroups.close()
        os.close(read_end)


@needs_root
async def test_a_profile_that_does_not_share_gets_a_namespace_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "grep.toml").write_bytes(_grep_with("shared_net = true", "shared_net = false"))
    launcher = Launcher()
    cgroups = cgroup_host()
    sharing = build_plan(load_profile("grep"), "auto", [], cgroups)
    own = build_plan(load_profile("grep", str(tmp_path)), "auto", [], cgroups)
    assert sharing.shared_net and not own.shared_net
    workers = []
    try:
        for plan in (sharing, own, own):
            workers.append(await start_worker(await launcher.spawn(plan, cgroups)))
        inodes = [net_inode(worker.pid) for worker in workers]
        assert len({*inodes, net_inode("self")}) == 4  # the shared one, two of their own, the host's
    finally:
        for worker in workers:
            await worker.finish()
        await launcher.close()
        cgroups.close()
