"""Turn the shipped profiles and the policy's [sandbox] section into worker plans.

Used by `bastion serve`, `bastion doctor` and `bastion sandbox run`, so all
three confine workers through the same code.
"""

from __future__ import annotations

import os

from broker.policy import Sandbox
from broker.sandbox import cgroup
from broker.sandbox.cgroup import CgroupHost
from broker.sandbox.plan import Plan, build_plan
from broker.sandbox.profile import load_profile

WORKER_KINDS = ("grep", "resource", "intel")


def cgroup_host() -> CgroupHost:
    return cgroup.detect(f"bastion-{os.getpid()}")


def plans_for(settings: Sandbox, cgroups: CgroupHost, profiles_dir: str | None = None, kinds: tuple[str, ...] = WORKER_KINDS) -> dict[str, Plan]:
    return {
        kind: build_plan(load_profile(kind, profiles_dir), settings.worker_user, list(settings.best_effort), cgroups)
        for kind in kinds
    }


def downgrades(layers: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per kind, the layers a worker reported as skipped (best-effort, not applied)."""
    skipped = {kind: [entry for entry in applied if entry.startswith("skipped:")] for kind, applied in layers.items()}
    return {kind: entries for kind, entries in skipped.items() if entries}
