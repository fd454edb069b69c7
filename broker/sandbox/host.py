"""Turn the shipped profiles and the policy's [sandbox] section into worker plans.

Used by `bastion serve`, `bastion doctor` and `bastion sandbox run`, so all
three confine workers through the same code.
"""

from __future__ import annotations

import math

import msgspec

from bastion_wire.plan import Plan
from broker.policy import Policy, Sandbox
from broker.sandbox import cgroup
from broker.sandbox.cgroup import CgroupHost
from broker.sandbox.plan import build_plan
from broker.sandbox.profile import Profile, load_profile

WORKER_KINDS = ("grep", "resource", "intel", "journal")


def has_journal_sources(policy: Policy) -> bool:
    """Whether the policy names [[journals]] sources: journal workers are started only then."""
    return bool(policy.journals)


def kinds_for(policy: Policy | None) -> tuple[str, ...]:
    """The worker kinds a policy needs: intel only with [intel], journal only with journal
    sources; without a policy (doctor alone), every kind."""
    if policy is None:
        return WORKER_KINDS
    unused = {
        kind
        for kind, used in (("intel", policy.intel is not None), ("journal", has_journal_sources(policy)))
        if not used
    }
    return tuple(kind for kind in WORKER_KINDS if kind not in unused)


def cgroup_host() -> CgroupHost:
    return cgroup.detect(cgroup.broker_tag())


def plans_for(
    settings: Sandbox,
    cgroups: CgroupHost,
    profiles_dir: str | None = None,
    kinds: tuple[str, ...] = WORKER_KINDS,
    timeout_s: float = 0,
) -> dict[str, Plan]:
    return {
        kind: build_plan(
            _cpu_at_least(load_profile(kind, profiles_dir), timeout_s),
            settings.worker_user,
            list(settings.best_effort),
            cgroups,
        )
        for kind in kinds
    }


def _cpu_at_least(profile: Profile, timeout_s: float) -> Profile:
    """RLIMIT_CPU is a backstop behind the wall-clock deadline: never below the policy's
    timeout_s, or a long scan the policy allows would die of SIGKILL at the profile's limit."""
    wanted = cpu_needed(timeout_s)
    if wanted <= profile.rlimits.cpu_s:
        return profile
    return msgspec.structs.replace(profile, rlimits=msgspec.structs.replace(profile.rlimits, cpu_s=wanted))


def cpu_needed(timeout_s: float) -> int:
    """The least RLIMIT_CPU (seconds) that lets a call use all of timeout_s."""
    return min(3600, math.ceil(timeout_s) + 1)


def downgrades(layers: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per kind, the layers a worker reported as skipped (best-effort, not applied)."""
    skipped = {kind: [entry for entry in applied if entry.startswith("skipped:")] for kind, applied in layers.items()}
    return {kind: entries for kind, entries in skipped.items() if entries}
