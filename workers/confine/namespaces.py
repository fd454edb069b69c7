"""Layer: new mount, pid, net, ipc, uts and cgroup namespaces (plus user when not root).

A pid namespace is entered only by a new process, so the worker is born in
it: the launcher clones it with CLONE_NEWPID (and, without root, CLONE_NEWUSER,
which the pid namespace needs; birth_flags below), and it starts as PID 1 of an
empty pid namespace. Being the broker's child (CLONE_PARENT) too, the
broker's pidfd and wait4 see the worker itself, and its real fate (exit
status, or the signal that killed it: SIGSYS from seccomp included). The
launcher once forked into the namespace after unshare instead, and left the
first process behind as a monitor: a second fork of a Python process
(~5 ms of CPU) and a process that held no filter. When PID 1 ends, the
kernel kills every process left in its namespace, and PID 1 reaps them
before it is reaped: an orphan the engine leaves behind dies with it.

The other namespaces are unshared here, in the layer's place in the order:
the cgroup one after the worker has joined its own cgroup (so its root is
that cgroup; on cgroup v2 a move out of a cgroup namespace's root is also
refused), mount before the filesystem layer builds the root. With a user
namespace, its id map is written first: the worker's own outer uid/gid, and
nothing else, appear as the worker ids inside.

A new network namespace has only a loopback interface, and it is down: the
worker can reach no address at all, not even 127.0.0.1. A profile with
`shared_net` has its workers born in one such namespace that the launcher made
for them (workers/launcher.py) instead of making ~1 ms worth of a new one per
worker: the layer checks the worker is in exactly that namespace, not the
host's. It is safe because a sharing profile can make no socket at all
(seccomp, checked when the profile is loaded) and Landlock scopes abstract
sockets; where this kernel's Landlock has no scopes, the worker unshares a
namespace of its own after all.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from workers.confine import landlock, syscalls
from workers.confine.layer import LayerError

FLAGS = {
    "mount": syscalls.CLONE_NEWNS,
    "pid": syscalls.CLONE_NEWPID,
    "net": syscalls.CLONE_NEWNET,
    "ipc": syscalls.CLONE_NEWIPC,
    "uts": syscalls.CLONE_NEWUTS,
    "cgroup": syscalls.CLONE_NEWCGROUP,
}
AT_BIRTH = ("pid",)  # the rest is unshared by the layer itself
# clone's answers that mean "not these namespaces on this host", not "no process now".
UNSUPPORTED = frozenset({errno.EPERM, errno.EINVAL, errno.ENOSPC, errno.EUSERS})


class SharedNet(NamedTuple):
    """The launcher's shared empty network namespace (inode numbers), or why it has none."""

    host: int = 0  # the namespace the launcher started in (the broker's)
    shared: int = 0  # the one it made and workers asking to share are born in
    error: str = ""


class Birth(NamedTuple):
    """The namespace flags the launcher cloned the worker with, or why it could not."""

    flags: int
    error: str = ""
    shared_net: SharedNet = SharedNet()


def net_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def birth_flags(names: list[str], user_namespace: bool) -> int:
    """The clone flags a worker of these namespaces is born with."""
    flags = 0
    for name in AT_BIRTH:
        if name in names:
            flags |= FLAGS[name]
    return flags | (syscalls.CLONE_NEWUSER if user_namespace else 0)


def describe(flags: int) -> str:
    names = [name for name, flag in FLAGS.items() if flags & flag]
    return ", ".join(names + (["user"] if flags & syscalls.CLONE_NEWUSER else []))


def apply(
    names: list[str],
    user_namespace: bool,
    inner_ids: tuple[int, int],
    outer_ids: tuple[int, int],
    birth: Birth,
    shared_net: bool = False,
) -> None:
    """Check the namespaces the worker was born in, map its ids, unshare the others."""
    if birth.error:
        raise LayerError("namespaces", birth.error)
    if birth.flags != birth_flags(names, user_namespace):
        raise LayerError("namespaces", f"born in ({describe(birth.flags)}), not in what the plan names")
    if "pid" in names and os.getpid() != 1:
        raise LayerError("namespaces", "the worker is not PID 1 of its pid namespace")
    if user_namespace:
        _map_ids(inner_ids, outer_ids)
    own = set(names) - set(AT_BIRTH)
    if shared_net and "net" in own and _in_shared_net(birth.shared_net):
        own.discard("net")
    flags = 0
    for name in own:
        flags |= FLAGS[name]
    try:
        syscalls.unshare(flags)
    except OSError as exc:
        raise LayerError("namespaces", f"unshare({describe(flags)}): {exc.strerror}") from None


def _in_shared_net(shared: SharedNet) -> bool:
    """True if the worker may stay in the launcher's shared network namespace: it is in
    that one (not the host's), and Landlock can scope abstract sockets (ABI 6), the second
    wall after seccomp. Without the scopes the worker makes a namespace of its own instead."""
    if shared.error:
        raise LayerError("namespaces", f"the shared network namespace: {shared.error}")
    here = net_inode()
    if not shared.shared or here != shared.shared or here == shared.host:
        raise LayerError("namespaces", "not born in the launcher's shared network namespace")
    return landlock.abi_version() >= landlock.SCOPES_ABI


def _map_ids(inner: tuple[int, int], outer: tuple[int, int]) -> None:
    """Map exactly one id: the worker's own outer uid/gid appear as `inner` inside."""
    try:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{inner[0]} {outer[0]} 1"),
            ("gid_map", f"{inner[1]} {outer[1]} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as file:
                file.write(text)
    except OSError as exc:
        raise LayerError("namespaces", f"cannot write the user namespace id maps: {exc.strerror}") from None
