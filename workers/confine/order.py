"""Apply a worker's sandbox plan to the calling process, in one fixed order.

   1. session        own session and process group; SIGKILL when the broker dies
   2. fd_hygiene     close every descriptor but the channel to the broker
   3. environment    empty environment
   4. cgroup         join the worker's own cgroup (memory and pids limits)
   5. namespaces     new mount, pid, net, ipc, uts, cgroup (+ user when not root)
                     namespaces; fork: the child is PID 1 and continues, the
                     parent becomes a monitor that reports the child's fate
   6. filesystem     empty read-only tmpfs root with read-only binds; pivot_root
   7. capabilities   empty the bounding and ambient sets (needs CAP_SETPCAP)
   8. identity       unprivileged uid/gid, no supplementary groups
      capabilities   clear and verify every remaining set
      session        the parent-death signal again: the identity change cleared it
   9. rlimits        CPU, address space, open files, processes, file size 0, core 0
  10. no_new_privs   no exec can gain privileges; allows the next two unprivileged
  11. landlock       deny all filesystem and TCP access not listed; scope signals
  12. seccomp        syscall allowlist, default action kill process

Each step relies on the ones before it: cgroups and mounts need root and the
host's /proc and /sys, so they come before the identity change; Landlock and
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


def _harden_monitor(plan: Plan, expected_parent: int) -> Callable[[], None]:
    def harden() -> None:
        capabilities.drop_bounding()
        identity.apply(plan.uid, plan.gid, plan.user_namespace)
        session.die_with_parent(expected_parent)  # the identity change cleared it
        capabilities.clear_all()
        no_new_privs.apply()

    return harden


def confine(plan: Plan, channel_fd: int, expected_parent: int) -> list[str]:
    """Confine the calling worker; return the applied layers, in order."""
    steps = _Steps(plan)
    monitor_alive: list[int] = []  # in PID 1: the monitor's liveness pipe, until rearm

    def enter_namespaces() -> None:
        alive_fd = namespaces.apply(
            plan.namespaces,
            plan.user_namespace,
            (plan.uid, plan.gid),
            (plan.outer_uid, plan.outer_gid),
            monitor_closes={channel_fd},
            harden_monitor=_harden_monitor(plan, expected_parent),
        )
        if alive_fd is not None:
            monitor_alive.append(alive_fd)

    def rearm_parent_death() -> None:
        try:
            session.rearm(expected_parent, monitor_alive[0] if monitor_alive else None)
        finally:
            for fd in monitor_alive:
                os.close(fd)
            monitor_alive.clear()

    def build_root() -> None:
        steps.needs("filesystem", "namespaces")  # never pivot in the host's mount namespace
        filesystem.apply(plan.binds, plan.tmpfs_bytes)

    def restrict_access() -> str:
        steps.needs("landlock", "no_new_privs")
        return landlock.apply(plan.read_exec, plan.read_only, plan.landlock_scopes)

    def filter_syscalls() -> None:
        steps.needs("seccomp", "no_new_privs")
        seccomp.apply(plan.seccomp_bpf)

    steps.run("session", lambda: session.apply(expected_parent))
    steps.run("fd_hygiene", lambda: fd_hygiene.apply({channel_fd}))
    steps.run("environment", environment.apply)
    steps.run("cgroup", lambda: cgroup.apply(plan.cgroup_dirs, plan.unavailable.get("cgroup", "")))
    steps.run("namespaces", enter_namespaces)
    steps.run("filesystem", build_root)
    steps.run("capabilities", capabilities.drop_bounding)
    steps.run("identity", lambda: identity.apply(plan.uid, plan.gid, plan.user_namespace))
    steps.run("capabilities", capabilities.clear_all)
    steps.run("session", rearm_parent_death)
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
