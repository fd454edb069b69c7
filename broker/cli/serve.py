"""`bastion serve`: MCP over stdio (default) or Streamable HTTP (--http).

Only MCP protocol ever goes to stdout while serving; all diagnostics go to
stderr. Start-up is fail-closed: if the policy, the audit log or any worker
sandbox cannot be set up, the command exits non-zero without serving.

The MCP SDK, and everything of ours built on it, is imported only once serving
starts (_import_sdk), never at module level: main.py builds every subcommand's
parser from this module, and `bastion --version`, `token new`, `audit verify`
and `doctor` must not pay the SDK's ~0.5 s of imports (tests/test_cli_startup.py).
Over stdio those imports run in a thread while the workers start (_SdkImport).

SIGTERM/SIGINT drain and stop (_stop_on_signal); SIGHUP reloads the policy for new
calls (broker/cli/reload.py) and never stops the server.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import logging
import os
import pwd
import signal
import sys
import threading
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from broker.audit.log import AuditError, AuditLog, Sealing
from broker.cli import exit_codes, preflight
from broker.cli.options import PROFILES_DIR_HELP, add_state_dir
from broker.files.allowlist import Allowlist
from broker.policy import Policy, PolicyError, load_policy
from broker.pool.ready_workers import WorkerPool
from broker.pool.worker_process import SandboxUnavailable
from broker.sandbox.host import cgroup_host, downgrades, kinds_for, plans_for
from broker.sandbox.plan import shared_uid_warning
from broker.sandbox.profile import ProfileError
from broker.transport.sd_notify import sd_notify
from broker.version import package_version

if TYPE_CHECKING:
    import uvicorn
    from mcp.server.lowlevel import Server

    from broker.calls import Bastion
    from broker.transport.http_server import Bind

# What serving needs that loads the SDK: imported by _import_sdk, then used by name.
SDK_MODULES = ("broker.transport.mcp_server", "broker.transport.stdio", "broker.transport.http_server")

log = logging.getLogger("bastion")


def _os_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid:{os.getuid()}"


async def _serve(
    policy: Policy,
    worker_stderr: bool,
    profiles_dir: str | None,
    bind: Bind | None,
    allowlist: Allowlist,
    state_dir: str | None = None,
) -> bool:
    """Serve until stopped; False if the stop could not be recorded in the audit log."""
    sdk = _SdkImport()
    # The same checks as `bastion doctor` (broker/cli/preflight.py), so the two agree.
    for finding in preflight.enforce(preflight.check(policy, profiles_dir, allowlist)):
        log.warning("%s: %s", finding.subject, finding.message)
    audit = AuditLog(
        policy.audit.path,
        policy.audit.max_bytes,
        policy.audit.keep,
        sealing=_sealing(policy),
        state_root=policy.state_root or None,
    )
    stop = {"reason": "stdin closed" if bind is None else "stopped"}
    cgroups = cgroup_host()
    kinds = kinds_for(policy)  # intel and journal workers only for a policy that uses them
    plans = plans_for(policy.sandbox, cgroups, profiles_dir, kinds, policy.limits.timeout_s)
    pool = WorkerPool(plans, cgroups, policy.workers.prestart, worker_stderr=worker_stderr)
    bastion: Bastion | None = None
    async with anyio.create_task_group() as task_group:
        try:
            await pool.start(task_group)
            _record_start(policy, audit, pool, cgroups.version or None, "stdio" if bind is None else f"http {bind.url}")
            if audit.sealing is not None:
                task_group.start_soon(_seal_periodically, audit, audit.sealing.interval_s)
            await sdk.wait()
            from broker.calls import Bastion  # already loaded: _import_sdk
            from broker.cli.reload import ReloadSource, reload_on_sighup  # built on broker.calls
            from broker.transport.mcp_server import build_server  # already loaded: _import_sdk

            bastion = Bastion(policy, pool, audit, _os_user() if bind is None else "http", allowlist)
            server = build_server(bastion)
            source = ReloadSource(policy.source, state_dir, profiles_dir, cgroups)
            await task_group.start(reload_on_sighup, bastion, source)  # before READY=1, as the stop handler
            # The SDK's ~600k long-lived objects would otherwise be walked by every
            # full collection (tens of ms, the latency tail): exempt them from now on.
            gc.collect()
            gc.freeze()
            if bind is None:
                await task_group.start(_stop_on_signal, task_group.cancel_scope, stop, None)
                stop["reason"] = await _run_stdio(server, bastion)
            else:
                await _run_http(server, bastion, policy, bind, task_group, stop)
        finally:
            with anyio.CancelScope(shield=True):
                await pool.close()
            task_group.cancel_scope.cancel()
    # The policy in force at the stop: a reload may have replaced the one served at start.
    return _record_stop(bastion.policy if bastion is not None else policy, audit, stop["reason"])


def _sealing(policy: Policy) -> Sealing | None:
    """Signed checkpoints, if the policy names a key (preflight has checked it loads)."""
    if not policy.audit.checkpoint_key:
        return None
    from broker.audit.checkpoint import CheckpointKeyError, load_signer

    try:
        signer = load_signer(policy.audit.checkpoint_key)
    except CheckpointKeyError as exc:
        raise AuditError(str(exc)) from None
    return Sealing(signer, policy.audit.checkpoint_every, policy.audit.checkpoint_interval_s)


async def _seal_periodically(audit: AuditLog, interval_s: float) -> None:
    """So a quiet server's last records are sealed within about one interval."""
    while True:
        await anyio.sleep(interval_s)
        try:
            audit.seal_if_due()
        except AuditError as exc:
            log.error("%s", exc)


def _record_stop(policy: Policy, audit: AuditLog, reason: str) -> bool:
    """Write server_stop; False (logged, never a "refusal to serve") if the audit log cannot take it."""
    try:
        audit.write("server_stop", policy_sha256=policy.sha256, reason=reason)
    except AuditError as exc:
        log.error("stopped (%s), but the audit log could not record server_stop: %s", reason, exc)
        return False
    finally:
        audit.close()  # with a key: a last checkpoint first
        seq, head = audit.head
    # An anchor outside the file: the chain's end cannot prove itself.
    log.info("stopped; audit log head: seq %d sha256 %s", seq, head)
    return True


def _record_start(policy: Policy, audit: AuditLog, pool: WorkerPool, cgroup: str | None, transport: str) -> None:
    skipped = downgrades(pool.layers)
    audit.write(
        "server_start",
        version=package_version(),
        policy=policy.source,
        policy_sha256=policy.sha256,
        transport=transport,
        layers=pool.layers,
        cgroup=cgroup,
        downgraded=skipped,
    )
    for kind, entries in skipped.items():
        log.warning("%s workers run WITHOUT best-effort layers: %s", kind, "; ".join(entries))
    if warning := shared_uid_warning(policy.sandbox.worker_user):
        log.warning("%s", warning)
    layers = pool.layers.get("grep", [])
    applied = len(layers) - len(skipped.get("grep", []))
    log.info(
        "serving %s; policy %s; %d of %d sandbox layers applied per worker",
        transport,
        policy.source,
        applied,
        len(layers),
    )


async def _run_stdio(server: Server, bastion: Bastion) -> str:
    """Serve until stdin closes or the client is gone (a broken pipe is a stop, not a failure)."""
    from broker.transport import stdio as stdio_transport  # already loaded: _import_sdk
    from broker.transport.request_guard import record_refusal  # already loaded: _import_sdk

    sd_notify("READY=1")
    return await stdio_transport.serve(server, functools.partial(record_refusal, bastion, client=None))


async def _run_http(
    server: Server, bastion: Bastion, policy: Policy, bind: Bind, task_group: anyio.abc.TaskGroup, stop: dict[str, str]
) -> None:
    from broker.transport.http_server import http_app, uvicorn_server  # already loaded: _import_sdk

    web = uvicorn_server(http_app(server, bind, policy.http, bastion), bind)
    await task_group.start(_stop_on_signal, None, stop, web)
    task_group.start_soon(_announce_when_started, web, bind)
    await web.serve()
    if not web.started:
        raise OSError(f"could not listen on {bind.uds or f'{bind.host}:{bind.port}'} (see the messages above)")


async def _announce_when_started(web: uvicorn.Server, bind: Bind) -> None:
    with anyio.move_on_after(30):
        while not web.started:
            await anyio.sleep(0.02)
        if bind.uds:
            os.chmod(bind.uds, 0o660)  # uvicorn makes it 0666; the token is not the only gate
        log.info("listening on %s", bind.uds or bind.url)
        sd_notify("READY=1")


async def _stop_on_signal(
    scope: anyio.CancelScope | None,
    stop: dict[str, str],
    web: uvicorn.Server | None,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """SIGTERM/SIGINT: cancel every call in flight (each kills its worker and writes
    its end record), then stop serving; the caller writes server_stop."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()  # handlers are in place before READY=1 goes out
        async for signum in signals:
            if stop.get("signalled"):
                log.info("%s received again: stopping now", signal.Signals(signum).name)
                if web is not None:
                    web.force_exit = True
                continue
            stop.update(signalled="yes", reason=signal.Signals(signum).name)
            log.info("%s received: cancelling calls in flight and stopping", stop["reason"])
            sd_notify("STOPPING=1")
            if web is not None:
                web.should_exit = True  # uvicorn drains, then the session manager cancels what is left
            if scope is not None:
                scope.cancel()
                return


def _import_sdk() -> None:
    for name in SDK_MODULES:
        importlib.import_module(name)


class _SdkImport:
    """The SDK imported in a thread of its own, started at once: meanwhile this thread checks the
    policy and the launcher and the first workers start (processes of their own, so on another
    core), and a host waits for both before its initialize is answered. Not a daemon thread: a
    start-up that fails meanwhile exits once the imports are done, never in the middle of one."""

    def __init__(self) -> None:
        self._failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="bastion-import-sdk")
        self._thread.start()

    def _run(self) -> None:
        try:
            _import_sdk()
        except BaseException as exc:  # noqa: BLE001 - raised again in wait()
            self._failed.append(exc)

    async def wait(self) -> None:
        await anyio.to_thread.run_sync(self._thread.join)
        if self._failed:
            raise self._failed[0]


def _hup_before_serving(signum: int, frame: object) -> None:
    """SIGHUP's default would kill a server still starting (systemd never reloads one before
    READY=1, but a person might): nothing to reload yet. reload_on_sighup takes over."""
    del signum, frame
    log.warning("SIGHUP while starting: ignored (nothing to reload yet; send it again once serving)")


def cmd_serve(args: argparse.Namespace) -> int:
    # A Python handler, not SIG_IGN: that would be inherited by the workers across exec.
    signal.signal(signal.SIGHUP, _hup_before_serving)
    try:
        policy = load_policy(args.policy, args.state_dir)
        allowlist = Allowlist(policy)  # log directories pinned now, before anything runs
    except PolicyError as exc:
        log.error("policy error: %s", exc)
        return exit_codes.CONFIG
    try:
        bind = None
        if args.http:
            _import_sdk()  # http_server is built on the SDK (and an HTTP server is no host's child)
            from broker.transport.http_server import check_bind, parse_bind  # already loaded: _import_sdk

            bind = parse_bind(args.http)
            check_bind(bind, policy.http)
    except PolicyError as exc:
        log.error("%s", exc)
        return exit_codes.CONFIG
    try:
        if not anyio.run(_serve, policy, args.debug_workers, args.profiles_dir, bind, allowlist, args.state_dir):
            return exit_codes.STOP_UNRECORDED
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # noqa: BLE001 - task groups wrap the start-up failure
        refusal = _start_up_failure(exc)
        if refusal is None:
            raise
        log.error("refusing to serve: %s", refusal)
        return exit_codes.REFUSED
    finally:
        _forget_stderr_if_gone()
    return exit_codes.OK


def _forget_stderr_if_gone() -> None:
    """A client that took our stderr pipe with it (killed, say) must not turn a clean stop into
    exit 120, which is what Python does when it cannot flush stderr at exit."""
    try:
        sys.stderr.flush()
    except OSError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stderr.fileno())
        os.close(null)


def _start_up_failure(exc: BaseException) -> Exception | None:
    """The audit/sandbox/profile error behind `exc`, even inside exception groups."""
    if isinstance(exc, (AuditError, SandboxUnavailable, ProfileError, OSError, preflight.PreflightRefusal)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _start_up_failure(inner)
            if found is not None:
                return found
    return None


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="serve MCP over stdio (default) or Streamable HTTP (--http)")
    serve.add_argument(
        "--http", metavar="ADDR", help="serve Streamable HTTP on HOST:PORT (loopback) or unix:/path/to/socket"
    )
    serve.add_argument("--policy", required=True, help="policy TOML file")
    add_state_dir(serve)
    serve.add_argument("--debug-workers", action="store_true", help="let workers write diagnostics to stderr")
    serve.add_argument("--profiles-dir", metavar="DIR", help=f"load {PROFILES_DIR_HELP}")
    serve.set_defaults(func=cmd_serve)
