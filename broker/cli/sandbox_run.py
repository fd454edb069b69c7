"""`bastion sandbox run`: a program or Python payload confined exactly as a worker kind.

It goes through the same code as serving: the plan from broker/sandbox/plan.py,
the worker from broker.pool.launcher.spawn_one, its layers from
workers/confine/order.py; for audits and the escape tests (tests/sandbox).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys

import anyio

from bastion_wire.plan import Plan
from bastion_wire.protocol import RunRequest
from broker.cli import exit_codes
from broker.cli.options import PROFILES_DIR_HELP
from broker.files.regular_file import open_regular
from broker.policy import PolicyError, Sandbox, load_policy
from broker.pool.launcher import spawn_one
from broker.pool.worker_process import SandboxUnavailable, WorkerResult, start_worker
from broker.sandbox.cgroup import CgroupHost
from broker.sandbox.host import cgroup_host
from broker.sandbox.plan import build_plan
from broker.sandbox.profile import ProfileError, load_profile, profile_names

DEFAULT_RUN_TIMEOUT_S = 30.0


def _settings(policy_file: str | None) -> Sandbox:
    return load_policy(policy_file).sandbox if policy_file else Sandbox()


def _resolve_program(argv: list[str]) -> list[str]:
    program = argv[0] if "/" in argv[0] else shutil.which(argv[0])
    if not program or not os.path.isfile(program):
        raise ProfileError(f"no such program: {argv[0]}")
    return [os.path.realpath(program), *argv[1:]]


def _describe(result: WorkerResult, timed_out: bool, timeout_s: float) -> tuple[str, int]:
    if timed_out:
        return f"timed out after {timeout_s:g} s; killed", exit_codes.TIMED_OUT
    if result.signal:
        number = signal.Signals[result.signal].value
        return f"killed by signal {result.signal}", exit_codes.SIGNALLED + number
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
        worker = await start_worker(await spawn_one(plan, cgroups, stdout=None, stderr=None))
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
        return exit_codes.CONFIG
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
        return exit_codes.CONFIG
    except SandboxUnavailable as exc:
        print(f"bastion sandbox run: refusing to run: {exc}", file=sys.stderr)
        return exit_codes.REFUSED
    print(f"bastion sandbox run: profile {args.profile}; layers: {', '.join(layers)}", file=sys.stderr)
    print(f"bastion sandbox run: {message}", file=sys.stderr)
    return code


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sandbox = commands.add_parser("sandbox", help="sandbox tools").add_subparsers(dest="sandbox_command", required=True)
    run = sandbox.add_parser("run", help="run a program or Python payload confined exactly as a worker kind")
    run.add_argument("--profile", required=True, help=f"worker kind: {', '.join(profile_names())}")
    run.add_argument("--profiles-dir", metavar="DIR", help=PROFILES_DIR_HELP)
    run.add_argument("--policy", help="policy TOML file (its [sandbox] section)")
    run.add_argument("--pass-fd", metavar="PATH", help="open PATH read-only and hand it over as descriptor 3")
    run.add_argument("--python", metavar="FILE", help="run this Python payload inside the confined worker itself")
    run.add_argument("--timeout", type=float, default=DEFAULT_RUN_TIMEOUT_S, help="wall-clock limit in seconds")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- program [args...]")
    run.set_defaults(func=cmd_sandbox_run)
