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
import sys

import anyio

from broker.audit import AuditError, AuditLog
from broker.dispatch import SandboxUnavailable, WorkerPool
from broker.policy import Policy, PolicyError, load_policy
from broker.sandbox.profile import ProfileError, load_profile
from broker.server import build_server, package_version
from broker.service import Bastion

WORKER_KINDS = ("grep", "resource")
EXIT_CONFIG = 2
EXIT_REFUSED = 3

log = logging.getLogger("bastion")


def _os_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid:{os.getuid()}"


async def _serve_stdio(policy: Policy, worker_stderr: bool) -> None:
    from mcp.server.stdio import stdio_server

    audit = AuditLog(policy.audit.path)
    profiles = {kind: load_profile(kind) for kind in WORKER_KINDS}
    pool = WorkerPool(profiles, policy.workers.prestart, worker_stderr=worker_stderr)
    async with anyio.create_task_group() as task_group:
        try:
            await pool.start(task_group)
            audit.write("server_start", version=package_version(), policy=policy.source, policy_sha256=policy.sha256, transport="stdio", layers=pool.layers)
            log.info("serving stdio; policy %s; worker layers %s", policy.source, pool.layers)
            server = build_server(Bastion(policy, pool, audit, _os_user()))
            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())
        finally:
            with anyio.CancelScope(shield=True):
                await pool.close()
            task_group.cancel_scope.cancel()
    audit.write("server_stop", policy_sha256=policy.sha256)
    audit.close()


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        log.error("policy error: %s", exc)
        return EXIT_CONFIG
    try:
        anyio.run(_serve_stdio, policy, args.debug_workers)
    except (AuditError, SandboxUnavailable, ProfileError) as exc:
        log.error("refusing to serve: %s", exc)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bastion", description="Hardened MCP server for security operations.")
    parser.add_argument("--version", action="version", version=f"bastion {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve MCP over stdio")
    serve.add_argument("--policy", required=True, help="policy TOML file")
    serve.add_argument("--debug-workers", action="store_true", help="let workers write diagnostics to stderr")
    serve.set_defaults(func=cmd_serve)
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
