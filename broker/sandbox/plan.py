"""Build a worker kind's sandbox plan: its profile resolved for this host and policy.

The broker builds one plan per worker kind at start-up (libraries to bind,
the worker uid, the compiled seccomp filter, which layers the policy
downgraded to best-effort, what this host cannot provide) and sends it to
every worker of that kind in its Setup frame, adding the worker's own
cgroup directories. The Plan itself is shared data (bastion_wire/plan.py);
the worker applies it with workers/confine/order.py.
"""

from __future__ import annotations

import os
import pwd

from bastion_wire.plan import Plan
from broker.sandbox.binds import bind_list
from broker.sandbox.cgroup import CgroupHost
from broker.sandbox.profile import Profile, ProfileError, requirements
from broker.sandbox.seccomp_compile import SeccompUnavailable, compile_filter

DEFAULT_WORKER_USER = "bastion-worker"
NOBODY = 65534


def worker_ids(worker_user: str) -> tuple[int, int]:
    """The (uid, gid) workers run as: a named user, a numeric uid, or 'auto'."""
    if worker_user == "auto":
        try:
            entry = pwd.getpwnam(DEFAULT_WORKER_USER)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            return NOBODY, NOBODY
    if worker_user.isdigit():
        return int(worker_user), int(worker_user)
    try:
        entry = pwd.getpwnam(worker_user)
    except KeyError:
        raise ProfileError(f"sandbox.worker_user: no user named {worker_user!r}") from None
    return entry.pw_uid, entry.pw_gid


def shared_uid_warning(worker_user: str) -> str:
    """Why the workers' uid is shared with processes outside Bastion, or "".

    Only a root broker switches workers to worker_user; without root they are the
    broker's own uid outside their user namespace."""
    if os.geteuid() != 0:
        return ""
    try:
        uid, _ = worker_ids(worker_user)
    except ProfileError:
        return ""  # reported as a policy error elsewhere
    if uid != NOBODY:
        return ""
    return (
        f"workers run as uid {NOBODY} (nobody), which other nobody processes on this host share and could "
        f"signal them with: create the {DEFAULT_WORKER_USER} account (`make worker-user`, or "
        "systemd-sysusers with deploy/sysusers.d/bastion-worker.conf)"
    )


def _may_share_net(profile: Profile, downgraded: list[str], unavailable: dict[str, str], rootless: bool) -> bool:
    """Share the launcher's empty network namespace only while both walls that make it
    safe (seccomp refusing sockets, Landlock's scopes) are required and available; without
    root the launcher cannot make one, so each worker makes its own."""
    walls = {"seccomp", "landlock"}
    return profile.namespaces.shared_net and not rootless and not walls & {*downgraded, *unavailable}


def build_plan(
    profile: Profile,
    worker_user: str,
    downgraded: list[str],
    cgroups: CgroupHost,
    extra_executables: tuple[str, ...] = (),
    run_mode: bool = False,
) -> Plan:
    unavailable: dict[str, str] = {}
    present = [path for path in profile.optional_executables if os.access(path, os.X_OK)]
    executables = [*profile.executables, *present, *extra_executables]
    try:
        binds = bind_list(executables, profile.filesystem.read_only)
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{profile.name}: cannot resolve what the worker root must contain: {exc}") from None
    try:
        bpf = compile_filter(profile.seccomp)
    except SeccompUnavailable as exc:
        bpf, unavailable["seccomp"] = b"", str(exc)
    if not cgroups.version:
        unavailable["cgroup"] = cgroups.reason
    rootless = os.geteuid() != 0
    uid, gid = (NOBODY, NOBODY) if rootless else worker_ids(worker_user)
    return Plan(
        kind=profile.name,
        requirements=requirements(profile, downgraded),
        unavailable=unavailable,
        rlimits=profile.rlimits,
        namespaces=list(profile.namespaces.unshare),
        user_namespace=rootless,
        shared_net=_may_share_net(profile, downgraded, unavailable, rootless),
        uid=uid,
        gid=gid,
        outer_uid=os.geteuid(),
        outer_gid=os.getegid(),
        executables=executables,
        binds=binds,
        read_exec=[path for path in binds if path not in profile.filesystem.read_only],
        read_only=list(profile.filesystem.read_only),
        tmpfs_bytes=profile.filesystem.tmpfs_bytes,
        cgroup_limits=profile.cgroup,
        landlock_scopes=list(profile.landlock.scopes),
        seccomp_bpf=bpf,
        allow_run=run_mode,
    )
