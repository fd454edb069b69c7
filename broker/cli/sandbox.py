"""`bastion doctor` and `bastion sandbox run`: the sandbox, inspected and exercised.

Both go through the same code as serving: plans from broker/sandbox/host.py,
workers from broker.pool.worker_process.spawn_worker, layers from workers/confine/order.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from dataclasses import dataclass

import anyio

from bastion_wire.plan import Plan
from bastion_wire.protocol import RunRequest
from broker.cli import preflight
from broker.files.allowlist import Allowlist
from broker.files.regular_file import open_regular
from broker.policy import Policy, PolicyError, Sandbox, load_policy
from broker.pool.worker_process import SandboxUnavailable, WorkerResult, spawn_worker, start_worker
from broker.sandbox.cgroup import CgroupHost
from broker.sandbox.host import WORKER_KINDS, cgroup_host
from broker.sandbox.plan import build_plan
from broker.sandbox.profile import LAYER_ORDER, ProfileError, load_profile, profile_names, requirements

EXIT_CONFIG = 2
EXIT_REFUSED = 3
DEFAULT_RUN_TIMEOUT_S = 30.0


def _settings(policy_file: str | None) -> Sandbox:
    return load_policy(policy_file).sandbox if policy_file else Sandbox()


# --- doctor ------------------------------------------------------------------------


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
        worker = await start_worker(spawn_worker(probe_plan, cgroups))
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
    lines = [f"{'layer':<14} {'this host':<18} {'required by':<16} would be applied"]
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
        lines.append(f"{layer:<14} {_support(probes, layer):<18} {', '.join(required_by) or '-':<16} {verdict}")
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
        # Like serve: the intel workers are only started for a policy with [intel].
        kinds = [kind for kind in WORKER_KINDS if kind != "intel" or policy is None or policy.intel is not None]
        probes = [anyio.run(_probe, kind, settings, args.profiles_dir) for kind in kinds]
    except (PolicyError, ProfileError) as exc:
        print(f"bastion doctor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SandboxUnavailable as exc:
        print(f"bastion doctor: a worker could not even start: {exc}", file=sys.stderr)
        return EXIT_REFUSED
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
    print("verdict: " + _verdict(servable, bool(preflight.refusals(findings))))
    return 0 if servable and not preflight.refusals(findings) else EXIT_REFUSED


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


# --- sandbox run -----------------------------------------------------------------


def _resolve_program(argv: list[str]) -> list[str]:
    program = argv[0] if "/" in argv[0] else shutil.which(argv[0])
    if not program or not os.path.isfile(program):
        raise ProfileError(f"no such program: {argv[0]}")
    return [os.path.realpath(program), *argv[1:]]


def _describe(result: WorkerResult, timed_out: bool, timeout_s: float) -> tuple[str, int]:
    if timed_out:
        return f"timed out after {timeout_s:g} s; killed", 124
    if result.signal:
        number = signal.Signals[result.signal].value
        return f"killed by signal {result.signal}", 128 + number
    return f"exited with status {result.exit_code}", result.exit_code or 0


def _open_pass_fd(path: str) -> int:
    try:
        return open_regular(path)
    except OSError as exc:
        raise ProfileError(f"--pass-fd {path}: {exc.strerror}") from None


async def _run_confined(
    plan: Plan, cgroups: CgroupHost, request: RunRequest, pass_fd: str | None, timeout_s: float
) -> tuple[list[str], str, int]:
    fd = None
    try:
        fd = _open_pass_fd(pass_fd) if pass_fd else None  # before any worker exists
        worker = await start_worker(spawn_worker(plan, cgroups, stdout=None, stderr=None))
        worker.hand_over(request, fd)
        if fd is not None:
            os.close(fd)
            fd = None
        result = WorkerResult()
        with anyio.move_on_after(timeout_s) as scope:
            await anyio.wait_readable(worker.pidfd)
        await worker.finish(result)
    finally:
        if fd is not None:
            os.close(fd)
        cgroups.close()
    message, code = _describe(result, scope.cancelled_caught, timeout_s)
    return worker.layers, message, code


def cmd_sandbox_run(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if bool(argv) == bool(args.python):
        print("bastion sandbox run: give either -- ARGV or --python FILE", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = _settings(args.policy)
        argv = _resolve_program(argv) if argv else []
        code_text = open(args.python, encoding="utf-8").read() if args.python else ""
        profile = load_profile(args.profile, args.profiles_dir)
        cgroups = cgroup_host()
        plan = build_plan(
            profile, settings.worker_user, list(settings.best_effort), cgroups, tuple(argv[:1]), run_mode=True
        )
        layers, message, code = anyio.run(
            _run_confined, plan, cgroups, RunRequest(argv=argv, python=code_text), args.pass_fd, args.timeout
        )
    except (PolicyError, ProfileError, OSError) as exc:
        print(f"bastion sandbox run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SandboxUnavailable as exc:
        print(f"bastion sandbox run: refusing to run: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"bastion sandbox run: profile {args.profile}; layers: {', '.join(layers)}", file=sys.stderr)
    print(f"bastion sandbox run: {message}", file=sys.stderr)
    return code


def add_commands(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser("doctor", help="report which sandbox layers this host supports")
    doctor.add_argument(
        "--policy",
        help="policy TOML file: its layers and every check serve makes; default [sandbox] settings otherwise",
    )
    doctor.add_argument("--profiles-dir", metavar="DIR", help="sandbox profiles from DIR instead of the shipped ones")
    doctor.add_argument(
        "--state-dir",
        metavar="DIR",
        help="directory for what a policy writes under ${state}/ (default $XDG_STATE_HOME/bastion or ~/.local/state/bastion)",
    )
    doctor.set_defaults(func=cmd_doctor)
    sandbox = commands.add_parser("sandbox", help="sandbox tools").add_subparsers(dest="sandbox_command", required=True)
    run = sandbox.add_parser("run", help="run a program or Python payload confined exactly as a worker kind")
    run.add_argument("--profile", required=True, help=f"worker kind: {', '.join(profile_names())}")
    run.add_argument("--profiles-dir", metavar="DIR", help="sandbox profiles from DIR instead of the shipped ones")
    run.add_argument("--policy", help="policy TOML file (its [sandbox] section)")
    run.add_argument("--pass-fd", metavar="PATH", help="open PATH read-only and hand it over as descriptor 3")
    run.add_argument("--python", metavar="FILE", help="run this Python payload inside the confined worker itself")
    run.add_argument("--timeout", type=float, default=DEFAULT_RUN_TIMEOUT_S, help="wall-clock limit in seconds")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- program [args...]")
    run.set_defaults(func=cmd_sandbox_run)
