"""SIGHUP (`systemctl reload bastion`): re-read the policy and apply it without a restart.

The new policy is validated completely before anything changes: parsed, compared with
the running one (restart_needed in broker/policy_generation.py: what only a restart can
apply refuses the reload as a whole), its logs pinned into a new Allowlist, the same
preflight checks as at start (broker/cli/preflight.py) and the workers' plans rebuilt
and compared (a changed sandbox profile, or a timeout_s beyond the workers' CPU limit,
needs a restart; a lower timeout_s leaves their CPU limit as it is). Any
refusal keeps the old policy, is logged and audited as a refused `policy_reload`.
Otherwise the `policy_reload` record (with the new SHA-256) is written first, then the
new PolicyGeneration is swapped in: new calls use it, calls in flight finish on theirs.
systemd hears RELOADING=1 before and READY=1 after (sd_notify(3)).
"""

from __future__ import annotations

import hashlib
import logging
import signal
import time
from dataclasses import dataclass

import anyio
import anyio.abc
import msgspec

from bastion_wire.plan import Plan
from broker.audit.log import AuditError
from broker.calls import Bastion
from broker.cli import preflight
from broker.files.allowlist import Allowlist
from broker.files.regular_file import read_regular
from broker.policy import MAX_POLICY_BYTES, Policy, PolicyError, load_policy
from broker.policy_generation import PolicyGeneration, restart_needed
from broker.sandbox.cgroup import CgroupHost
from broker.sandbox.host import cpu_needed, plans_for
from broker.sandbox.profile import ProfileError
from broker.transport.sd_notify import sd_notify

log = logging.getLogger("bastion.reload")
EVENT = "policy_reload"


@dataclass(frozen=True)
class ReloadSource:
    """Where the policy comes from and what the running workers were planned with."""

    path: str
    state_dir: str | None
    profiles_dir: str | None
    cgroups: CgroupHost


class ReloadRefused(Exception):
    def __init__(self, message: str, sha256: str | None) -> None:
        super().__init__(message)
        self.sha256 = sha256  # of the file that was refused (None: it could not be read)


async def reload_on_sighup(
    bastion: Bastion, source: ReloadSource, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """One reload per SIGHUP, one at a time (a signal during a reload waits for it)."""
    try:
        with anyio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()  # the handler is in place before READY=1 goes out
            async for _ in signals:
                log.info("SIGHUP received: reloading the policy from %s", source.path)
                await reload(bastion, source)
    finally:
        # The receiver gone, SIGHUP's default would kill a server writing server_stop.
        signal.signal(signal.SIGHUP, _hup_while_stopping)


def _hup_while_stopping(signum: int, frame: object) -> None:
    del signum, frame
    log.warning("SIGHUP while stopping: ignored")


async def reload(bastion: Bastion, source: ReloadSource) -> bool:
    """Apply the policy file as it is now; False (old policy kept, logged, audited) if refused."""
    sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")  # the clock of CLOCK_MONOTONIC
    old = bastion.generation
    try:
        try:
            # Blocking work (files, the audit log's lock probe, seccomp compiles): off the event loop.
            policy, allowlist = await anyio.to_thread.run_sync(_prepare, source, old.policy, bastion.pool.plans)
        except ReloadRefused as exc:
            _record_refusal(bastion, source, old.policy, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a reload must never take the server down
            log.exception("policy reload failed unexpectedly")
            _record_refusal(bastion, source, old.policy, ReloadRefused(f"unexpected error: {exc!r}", None))
            return False
        try:
            bastion.audit.write(
                EVENT,
                outcome="applied",
                policy=source.path,
                policy_sha256=policy.sha256,
                previous_sha256=old.policy.sha256,
            )
        except AuditError as exc:
            allowlist.close()
            log.error("policy reload not applied (the old policy stays): the audit log cannot record it: %s", exc)
            return False
        generation = PolicyGeneration.succeeding(old, policy, allowlist)
        await bastion.swap(generation)
        log.info("policy reloaded: sha256 %s (was %s)", policy.sha256, old.policy.sha256)
        if bastion.client == "http" and not generation.client_names():  # revoking every token locks all out
            log.warning("no [[http.clients]] token is accepted any more: every HTTP request is refused")
        return True
    finally:
        sd_notify("READY=1")


def _record_refusal(bastion: Bastion, source: ReloadSource, kept: Policy, exc: ReloadRefused) -> None:
    log.error("policy reload refused, the old policy (sha256 %s) stays: %s", kept.sha256, exc)
    try:
        bastion.audit.write(
            EVENT,
            outcome="refused",
            policy=source.path,
            policy_sha256=exc.sha256,
            kept_sha256=kept.sha256,
            error=str(exc),
        )
    except AuditError as error:
        log.error("%s", error)


def _prepare(source: ReloadSource, old: Policy, plans: dict[str, Plan]) -> tuple[Policy, Allowlist]:
    """The new policy and its pinned allowlist, checked as completely as a start checks it."""
    try:
        policy = load_policy(source.path, source.state_dir)
    except PolicyError as exc:
        raise ReloadRefused(f"policy error: {exc}", _file_sha256(source.path)) from None
    fixed = restart_needed(old, policy)
    if fixed:
        raise ReloadRefused(f"restart needed: {', '.join(fixed)}", policy.sha256)
    try:
        allowlist = Allowlist(policy)
    except PolicyError as exc:
        raise ReloadRefused(f"policy error: {exc}", policy.sha256) from None
    try:
        _check(policy, old, allowlist, source, plans)
    except BaseException:
        allowlist.close()
        raise
    return policy, allowlist


def _check(policy: Policy, old: Policy, allowlist: Allowlist, source: ReloadSource, plans: dict[str, Plan]) -> None:
    try:
        warnings = preflight.enforce(preflight.check(policy, source.profiles_dir, allowlist))
    except preflight.PreflightRefusal as exc:
        raise ReloadRefused(str(exc), policy.sha256) from None
    for finding in warnings:
        log.warning("%s: %s", finding.subject, finding.message)
    try:
        # With the running timeout_s: what differs then is the profiles (or the host's tools).
        wanted = plans_for(policy.sandbox, source.cgroups, source.profiles_dir, tuple(plans), old.limits.timeout_s)
    except ProfileError as exc:
        raise ReloadRefused(f"sandbox profiles: {exc}", policy.sha256) from None
    if any(_encoded(wanted[kind]) != _encoded(plan) for kind, plan in plans.items()):
        raise ReloadRefused("restart needed: sandbox profiles (the workers' plans would change)", policy.sha256)
    # RLIMIT_CPU backs the wall-clock deadline up: it must cover the new timeout_s (a
    # lower timeout_s leaves the running workers' higher limit as a backstop).
    limit = min(plan.rlimits.cpu_s for plan in plans.values())
    if cpu_needed(policy.limits.timeout_s) > limit:
        raise ReloadRefused(
            f"restart needed: limits.timeout_s (beyond the workers' CPU limit of {limit} s)", policy.sha256
        )


def _encoded(plan: Plan) -> bytes:
    return msgspec.msgpack.encode(plan)


def _file_sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(read_regular(path, MAX_POLICY_BYTES)).hexdigest()
    except OSError:
        return None
