"""The `bastion` command line.

Only MCP protocol ever goes to stdout while serving; all diagnostics go to
stderr. Start-up is fail-closed: if the policy, the audit log or any worker
sandbox cannot be set up, the command exits non-zero without serving.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import signal
import sys

import anyio

from broker import audit_verify, intel_cli, sandbox_cli
from broker.audit import AuditError, AuditLog
from broker.dispatch import SandboxUnavailable, WorkerPool
from broker.policy import Policy, PolicyError, load_policy
from broker.sandbox.host import WORKER_KINDS, cgroup_host, downgrades, plans_for
from broker.sandbox.profile import ProfileError
from broker.server import build_server, package_version
from broker.service import Bastion
from broker.stdin_lines import StdinLines

EXIT_CONFIG = 2
EXIT_REFUSED = 3

log = logging.getLogger("bastion")


def _os_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid:{os.getuid()}"


async def _serve_stdio(policy: Policy, worker_stderr: bool, profiles_dir: str | None) -> None:
    from mcp.server.stdio import stdio_server

    audit = AuditLog(policy.audit.path, policy.audit.max_bytes, policy.audit.keep)
    stop = {"reason": "stdin closed"}
    cgroups = cgroup_host()
    kinds = WORKER_KINDS if policy.intel is not None else tuple(kind for kind in WORKER_KINDS if kind != "intel")
    pool = WorkerPool(plans_for(policy.sandbox, cgroups, profiles_dir, kinds), cgroups, policy.workers.prestart, worker_stderr=worker_stderr)
    async with anyio.create_task_group() as task_group:
        try:
            await pool.start(task_group)
            skipped = downgrades(pool.layers)
            audit.write(
                "server_start", version=package_version(), policy=policy.source, policy_sha256=policy.sha256,
                transport="stdio", layers=pool.layers, cgroup=cgroups.version or None, downgraded=skipped,
            )
            if policy.intel is not None and not os.path.isfile(policy.intel.database):
                log.warning("intel database %s does not exist: check_ip_reputation fails until `bastion intel compile` runs", policy.intel.database)
            for kind, entries in skipped.items():
                log.warning("%s workers run WITHOUT best-effort layers: %s", kind, "; ".join(entries))
            log.info("serving stdio; policy %s; %d sandbox layers per worker", policy.source, len(pool.layers.get("grep", [])))
            task_group.start_soon(_stop_on_signal, task_group.cancel_scope, stop)
            server = build_server(Bastion(policy, pool, audit, _os_user()))
            async with stdio_server(stdin=StdinLines(0)) as (read_stream, write_stream):  # type: ignore[arg-type]
                await server.run(read_stream, write_stream, server.create_initialization_options())
        finally:
            with anyio.CancelScope(shield=True):
                await pool.close()
            task_group.cancel_scope.cancel()
    audit.write("server_stop", policy_sha256=policy.sha256, reason=stop["reason"])
    seq, head = audit.head
    audit.close()
    # An anchor outside the file: the chain's end cannot prove itself.
    log.info("stopped; audit log head: seq %d sha256 %s", seq, head)


async def _stop_on_signal(scope: anyio.CancelScope, stop: dict[str, str]) -> None:
    """SIGTERM/SIGINT: cancel every call in flight (each kills its worker and writes
    its end record), then stop serving; the caller writes server_stop."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            stop["reason"] = signal.Signals(signum).name
            log.info("%s received: cancelling calls in flight and stopping", stop["reason"])
            scope.cancel()
            return


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        log.error("policy error: %s", exc)
        return EXIT_CONFIG
    try:
        anyio.run(_serve_stdio, policy, args.debug_workers, args.profiles_dir)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # noqa: BLE001 - task groups wrap the start-up failure
        refusal = _start_up_failure(exc)
        if refusal is None:
            raise
        log.error("refusing to serve: %s", refusal)
        return EXIT_REFUSED
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    try:
        report = audit_verify.verify(args.files)
    except OSError as exc:
        print(f"bastion audit verify: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    for note in report.notes:
        print(f"note: {note}")
    print(audit_verify.summary(report, len(args.files)))
    return 1 if report.problem is not None else 0


def _start_up_failure(exc: BaseException) -> Exception | None:
    """The audit/sandbox/profile error behind `exc`, even inside exception groups."""
    if isinstance(exc, (AuditError, SandboxUnavailable, ProfileError)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _start_up_failure(inner)
            if found is not None:
                return found
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bastion", description="Hardened MCP server for security operations.")
    parser.add_argument("--version", action="version", version=f"bastion {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve MCP over stdio")
    serve.add_argument("--policy", required=True, help="policy TOML file")
    serve.add_argument("--debug-workers", action="store_true", help="let workers write diagnostics to stderr")
    serve.add_argument("--profiles-dir", metavar="DIR", help="load sandbox profiles from DIR instead of the shipped ones")
    serve.set_defaults(func=cmd_serve)
    audit = commands.add_parser("audit", help="audit log tools").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser("verify", help="check the hash chain of audit log files; exit 1 at the first problem")
    verify.add_argument("files", nargs="+", metavar="FILE", help="audit log files, oldest first (audit.jsonl.2 audit.jsonl.1 audit.jsonl)")
    verify.set_defaults(func=cmd_audit_verify)
    sandbox_cli.add_commands(commands)
    intel_cli.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="bastion: %(levelname)s %(message)s",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
