"""`bastion doctor`: which sandbox layers this host supports, and whether a policy can be served.

It goes through the same code as serving: plans from broker/sandbox/host.py,
workers from broker.pool.launcher.spawn_one, layers from workers/confine/order.py,
and the policy checks of broker/cli/preflight.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import anyio

from broker.cli import exit_codes, preflight
from broker.cli.options import PROFILES_DIR_HELP, add_state_dir
from broker.files.allowlist import Allowlist
from broker.policy import Policy, PolicyError, Sandbox, load_policy
from broker.pool.launcher import spawn_one
from broker.pool.worker_process import SandboxUnavailable, start_worker
from broker.sandbox.host import cgroup_host, kinds_for
from broker.sandbox.plan import build_plan, shared_uid_warning
from broker.sandbox.profile import LAYER_ORDER, ProfileError, load_profile, requirements


@dataclass
class Probe:
    kind: str
    requirements: dict[str, str]
    applied: dict[str, str]  # layer -> note ("" when applied plainly)
    skipped: dict[str, str]  # layer -> reason


def _parse_layers(entries: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    applied, skipped = {}, {}
    for entry in entries:
        name, _, note = entry.partition(" ")
        if note.startswith("(") and note.endswith(")"):
            note = note[1:-1]
        if name.startswith("skipped:"):
            skipped[name.removeprefix("skipped:")] = note
        else:
            applied[name] = note
    return applied, skipped


async def _probe(kind: str, settings: Sandbox, profiles_dir: str | None) -> Probe:
    """Start one worker with every layer best-effort and see which ones hold."""
    cgroups = cgroup_host()
    try:
        profile = load_profile(kind, profiles_dir)
        required = requirements(profile, list(settings.best_effort))
        probe_plan = build_plan(profile, settings.worker_user, list(LAYER_ORDER), cgroups)
        worker = await start_worker(await spawn_one(probe_plan, cgroups))
        await worker.finish()
    finally:
        cgroups.close()
    applied, skipped = _parse_layers(worker.layers)
    return Probe(kind, dict(required), applied, skipped)


def _support(probes: list[Probe], layer: str) -> str:
    missing = [probe.kind for probe in probes if layer in probe.skipped]
    if missing:
        return "NO" if len(missing) == len(probes) else f"NO for {', '.join(missing)}"
    notes = sorted({probe.applied[layer] for probe in probes if probe.applied.get(layer)})
    return f"yes ({'; '.join(notes)})" if notes else "yes"


def _doctor_table(probes: list[Probe]) -> tuple[list[str], list[str], bool]:
    root = os.geteuid() == 0
    width = max(16, len(", ".join(probe.kind for probe in probes)))  # the column fits every kind named
    lines = [f"{'layer':<14} {'this host':<18} {'required by':<{width}} would be applied"]
    reasons: list[str] = []
    servable = True
    for layer in LAYER_ORDER:
        required_by = [probe.kind for probe in probes if probe.requirements[layer] == "required"]
        missing = [probe.kind for probe in probes if layer in probe.skipped]
        if not missing:
            verdict = "yes"
        elif set(missing) & set(required_by):
            verdict, servable = "NO: bastion serve refuses to start", False
        else:
            verdict = "no (the policy downgraded it to best-effort)"
        if missing:
            why = next(p.skipped[layer] for p in probes if layer in p.skipped)
            reasons.append(f"  {layer}: {why}\n      fix: {preflight.layer_fix(layer, why, root)}")
        lines.append(f"{layer:<14} {_support(probes, layer):<18} {', '.join(required_by) or '-':<{width}} {verdict}")
    return lines, reasons, servable


def _policy_checks(findings: list[preflight.Finding]) -> list[str]:
    lines = ["policy checks (the same as bastion serve makes at start-up):"]
    for finding in findings:
        lines.append(f"  {'REFUSES' if finding.refuses else 'warning'} {finding.subject}: {finding.message}")
    return lines if findings else [lines[0] + " all passed"]


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        policy: Policy | None = load_policy(args.policy, args.state_dir) if args.policy else None
        settings = policy.sandbox if policy else Sandbox()
        findings = _policy_findings(policy, args.profiles_dir) if policy else []
        # Like serve: intel and journal workers only for a policy that uses them.
        kinds = kinds_for(policy)
        probes = [anyio.run(_probe, kind, settings, args.profiles_dir) for kind in kinds]
    except (PolicyError, ProfileError) as exc:
        print(f"bastion doctor: {exc}", file=sys.stderr)
        return exit_codes.CONFIG
    except SandboxUnavailable as exc:
        print(f"bastion doctor: a worker could not even start: {exc}", file=sys.stderr)
        return exit_codes.REFUSED
    lines, reasons, servable = _doctor_table(probes)
    mode = (
        "root: workers drop to an unprivileged uid" if os.geteuid() == 0 else "not root: workers use a user namespace"
    )
    print(f"Bastion sandbox on this host ({mode}); profiles: {', '.join(kinds)}")
    print("\n".join(lines))
    if reasons:
        print("why layers are missing:\n" + "\n".join(reasons))
    if policy is not None:
        print("\n".join(_policy_checks(findings)))
    if warning := shared_uid_warning(settings.worker_user):
        print(f"warning: {warning}")  # after the table, whose rows tools and tests read by position
    print("verdict: " + _verdict(servable, bool(preflight.refusals(findings))))
    return exit_codes.OK if servable and not preflight.refusals(findings) else exit_codes.REFUSED


def _verdict(layers_ok: bool, refused: bool) -> str:
    if not layers_ok:
        return "a required layer is missing; `bastion serve` would refuse to start"
    if refused:
        return "a policy check failed (REFUSES above); `bastion serve` would refuse to start"
    return "every required layer is available; the policy can be served"


def _policy_findings(policy: Policy, profiles_dir: str | None) -> list[preflight.Finding]:
    """serve's checks, on the allowlist as serve would pin it (PolicyError: a symlink on an entry's path)."""
    allowlist = Allowlist(policy)
    try:
        return preflight.check(policy, profiles_dir, allowlist)
    finally:
        allowlist.close()


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser("doctor", help="report which sandbox layers this host supports")
    doctor.add_argument(
        "--policy",
        help="policy TOML file: its layers and every check serve makes; default [sandbox] settings otherwise",
    )
    doctor.add_argument("--profiles-dir", metavar="DIR", help=PROFILES_DIR_HELP)
    add_state_dir(doctor)
    doctor.set_defaults(func=cmd_doctor)
