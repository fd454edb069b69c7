"""Apply a worker's sandbox plan to the calling process, in one fixed order.

   0. (birth)        the launcher clones the worker into a new pid namespace
                     (+ user when not root), so it starts as PID 1; nothing
                     runs in it before step 1 but the launcher's own code
   1. session        own session and process group; SIGKILL when the broker dies
   2. fd_hygiene     close every descriptor but the channel to the broker (and
                     the broker's pidfd, which step 8's session check needs)
   3. environment    empty environment
   4. cgroup         join the worker's own cgroup (memory and pids limits)
   5. namespaces     check the pid (+ user) namespace of its birth (and the
                     shared net one, if the plan shares it), write the user id
                     map; unshare mount, net, ipc, uts, cgroup
   6. filesystem     empty read-only tmpfs root with read-only binds; pivot_root
   7. capabilities   empty the bounding and ambient sets (needs CAP_SETPCAP)
   8. identity       unprivileged uid/gid, no supplementary groups
      capabilities   clear and verify every remaining set
      session        the parent-death signal again: the identity change cleared
                     it; then the broker's pidfd is closed
   9. rlimits        CPU, address space, open files, processes, file size 0, core 0
  10. no_new_privs   no exec can gain privileges; allows the next two unprivileged
  11. landlock       deny all filesystem and TCP access not listed; scope signals
  12. seccomp        syscall allowlist, default action kill process

Each step relies on the ones before it: cgroups and mounts need root and the
host's /proc and /sys, so they come before the identity change; the cgroup
namespace is unshared after the cgroup join, so its root is the worker's own
cgroup (a new pid namespace changes nothing for the join: it writes "0",
the calling thread, and /proc is still the host's); Landlock and
seccomp need no_new_privs; seccomp is last so the set-up itself needs no
syscalls outside the allowlist. A required layer that fails raises
LayerError; a best-effort one is reported as 'skipped:NAME (reason)'.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from bastion_wire.plan import Plan
from workers.confine import (
    capabilities,
    cgroup,
    environment,
    fd_hygiene,
    filesystem,
    identity,
    landlock,
    namespaces,
    no_new_privs,
    rlimits,
    seccomp,
    session,
)
from workers.confine.layer import LayerError


class _Steps:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.applied: list[str] = []

    def run(self, name: str, action: Callable[[], str | None]) -> bool:
        try:
            if name in self.plan.unavailable:
                raise LayerError(name, self.plan.unavailable[name])
            note = action()
        except LayerError as exc:
            if self.plan.requirements.get(name, "required") == "required":
                raise
            self.applied.append(f"skipped:{name} ({exc.reason})")
            return False
        self.applied.append(f"{name} ({note})" if note else name)
        return True

    def needs(self, name: str, layer: str) -> None:
        if not any(entry == layer or entry.startswith(layer + " ") for entry in self.applied):
            raise LayerError(name, f"needs the {layer} layer, which was not applied")


def confine(plan: Plan, channel_fd: int, broker_pidfd: int, birth: namespaces.Birth) -> list[str]:
    """Confine the calling worker; return the applied layers, in order."""
    steps = _Steps(plan)

    def enter_namespaces() -> None:
        ids, outer = (plan.uid, plan.gid), (plan.outer_uid, plan.outer_gid)
        namespaces.apply(plan.namespaces, plan.user_namespace, ids, outer, birth, plan.shared_net)

    def build_root() -> None:
        steps.needs("filesystem", "namespaces")  # never pivot in the host's mount namespace
        filesystem.apply(plan.binds, plan.tmpfs_bytes)

    def restrict_access() -> str:
        steps.needs("landlock", "no_new_privs")
        return landlock.apply(plan.read_exec, plan.read_only, plan.landlock_scopes)

    def filter_syscalls() -> None:
        steps.needs("seccomp", "no_new_privs")
        seccomp.apply(plan.seccomp_bpf)

    steps.run("session", lambda: session.apply(broker_pidfd))
    steps.run("fd_hygiene", lambda: fd_hygiene.apply({channel_fd, broker_pidfd}))
    steps.run("environment", environment.apply)
    steps.run("cgroup", lambda: cgroup.apply(plan.cgroup_dirs, plan.unavailable.get("cgroup", "")))
    steps.run("namespaces", enter_namespaces)
    steps.run("filesystem", build_root)
    steps.run("capabilities", capabilities.drop_bounding)
    steps.run("identity", lambda: identity.apply(plan.uid, plan.gid, plan.user_namespace))
    steps.run("capabilities", capabilities.clear_all)
    steps.run("session", lambda: session.die_with_broker(broker_pidfd))  # the identity change cleared it
    os.close(broker_pidfd)  # no descriptor of the broker's process is held past this point
    steps.run("rlimits", lambda: rlimits.apply(plan.rlimits))
    steps.run("no_new_privs", no_new_privs.apply)
    steps.run("landlock", restrict_access)
    steps.run("seccomp", filter_syscalls)
    return _merge(steps.applied)


def _merge(applied: list[str]) -> list[str]:
    """'capabilities' runs in two steps; report it once."""
    merged: list[str] = []
    for entry in applied:
        if entry not in merged:
            merged.append(entry)
    return merged
