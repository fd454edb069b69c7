"""The sandbox plan the broker hands a worker in its Setup frame.

The broker builds one plan per worker kind at start-up (broker/sandbox/plan.py:
libraries to bind, the worker uid, the compiled seccomp filter, which layers the
policy downgraded to best-effort, what this host cannot provide) and adds each
worker's own cgroup directories; the worker applies it with
workers/confine/order.py. The limits travel exactly as the profile declares
them, so their types (Rlimits, Cgroup, with their bounds) are defined here and
the profile schema (broker/sandbox/profile.py) uses them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Requirement = Literal["required", "best_effort"]


class Rlimits(msgspec.Struct, forbid_unknown_fields=True):
    cpu_s: Annotated[int, Meta(ge=1, le=3600)]
    address_space_bytes: Annotated[int, Meta(ge=16 << 20)]
    open_files: Annotated[int, Meta(ge=8, le=4096)]
    # Counted per uid across all workers (the pids cgroup is the per-worker cap).
    processes: Annotated[int, Meta(ge=1, le=4096)]
    file_size_bytes: Annotated[int, Meta(ge=0)] = 0
    core_bytes: Annotated[int, Meta(ge=0)] = 0


class Cgroup(msgspec.Struct, forbid_unknown_fields=True):
    memory_bytes: Annotated[int, Meta(ge=16 << 20)]
    pids: Annotated[int, Meta(ge=1, le=4096)]


class Plan(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    requirements: dict[str, Requirement]
    unavailable: dict[str, str]  # layer -> why this host or broker cannot provide it
    rlimits: Rlimits
    namespaces: list[str]
    user_namespace: bool
    uid: int
    gid: int
    outer_uid: int
    outer_gid: int
    executables: list[str]
    binds: list[str]
    read_exec: list[str]
    read_only: list[str]
    tmpfs_bytes: int
    cgroup_limits: Cgroup
    landlock_scopes: list[str]
    seccomp_bpf: bytes
    cgroup_dirs: list[str] = msgspec.field(default_factory=list)
    allow_run: bool = False  # only `bastion sandbox run` sets this
    # "net" is the launcher's one empty network namespace, shared by the workers it forks,
    # instead of a new one each (broker/sandbox/profile.py says when a profile may ask).
    shared_net: bool = False


def encode_plan(plan: Plan) -> bytes:
    return msgspec.msgpack.encode(plan)


# Built at import, so a worker cloned from the launcher does not build it (~0.5 ms) on every start.
_plan_decoder = msgspec.msgpack.Decoder(Plan)


def plan_from_wire(data: bytes) -> Plan:
    return _plan_decoder.decode(data)
