"""Streamable HTTP transport (`bastion serve --http ADDR`) for a jump box.

ADDR is HOST:PORT (loopback unless the policy sets [http] allow_non_loopback)
or unix:/path/to/socket. The SDK's Streamable HTTP app does the protocol,
its bearer-token middleware the authentication (broker/transport/http_auth.py,
which also words the 401 and answers OAuth discovery with 404) and its transport
security the DNS-rebinding protection (Host and Origin allowlists). uvicorn
serves the app; signals stay ours, so SIGTERM drains like stdio does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import uvicorn
from mcp.server.auth.middleware.bearer_auth import RequireAuthMiddleware
from mcp.server.auth.settings import AuthSettings
from mcp.server.lowlevel import Server
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route

from broker.calls import Bastion
from broker.policy import Http, PolicyError
from broker.transport.http_auth import NoOAuthDiscovery, PolicyTokens, StaticBearer
from broker.transport.http_gate import GatedEndpoint
from broker.transport.http_sessions import SessionKeeper
from broker.transport.jsonrpc_gate import MAX_MESSAGE_BYTES
from broker.transport.session_table import SessionTable

GRACEFUL_SHUTDOWN_S = 10
MCP_PATH = "/mcp"  # the SDK's default streamable_http_path
WELL_KNOWN = "/.well-known/{rest:path}"  # OAuth discovery, all of it: 404 (broker/transport/http_auth.py)


@dataclass(frozen=True)
class Bind:
    host: str = ""
    port: int = 0
    uds: str = ""

    @property
    def url(self) -> str:
        if self.uds:
            return "http://localhost/mcp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/mcp"


def parse_bind(value: str) -> Bind:
    if value.startswith("unix:"):
        path = value.removeprefix("unix:")
        if not path.startswith("/"):
            raise PolicyError("--http unix:PATH needs an absolute path")
        return Bind(uds=path)
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise PolicyError("--http takes HOST:PORT (e.g. 127.0.0.1:8765, [::1]:8765) or unix:/path/to/socket")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise PolicyError("--http needs an IP address, not a host name (e.g. 127.0.0.1:8765)") from None
    return Bind(host=host, port=int(port))


def check_bind(bind: Bind, http: Http) -> None:
    if not http.clients or all(client.revoked for client in http.clients):
        raise PolicyError("--http needs at least one [[http.clients]] entry (create one with `bastion token new NAME`)")
    if bind.uds or ipaddress.ip_address(bind.host).is_loopback or http.allow_non_loopback:
        return
    raise PolicyError(
        f"refusing to listen on {bind.host}, which is not loopback; set [http] allow_non_loopback = true to allow it"
    )


def transport_security(bind: Bind, http: Http) -> TransportSecuritySettings:
    if bind.uds:
        # Reached through a local port forward (ssh -L PORT:/run/bastion/mcp.sock): loopback names only.
        hosts = ["localhost", "localhost:*", "127.0.0.1:*", "[::1]:*"]
        origins = ["http://localhost", "http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
    else:
        host = f"[{bind.host}]" if ":" in bind.host else bind.host
        hosts = [f"{host}:{bind.port}"] + (
            [f"localhost:{bind.port}"] if ipaddress.ip_address(bind.host).is_loopback else []
        )
        origins = [f"http://{name}" for name in hosts]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts + list(http.allowed_hosts),
        allowed_origins=origins + list(http.allowed_origins),
    )


def http_app(server: Server, bind: Bind, http: Http, bastion: Bastion) -> Starlette:
    app = server.streamable_http_app(
        host=bind.host or "localhost",
        transport_security=transport_security(bind, http),
        # model_validate: pydantic turns the str into the AnyHttpUrl the field is typed as.
        auth=AuthSettings.model_validate({"issuer_url": bind.url, "resource_server_url": None}),
        token_verifier=PolicyTokens(lambda: bastion.policy.http.clients),  # the current policy's
        # The SDK's own expiry and limit stay on as a backstop; broker/transport/http_sessions.py
        # enforces both first. Its limit is doubled: a session the table has dropped may
        # still be winding down in the SDK while its successor opens.
        session_idle_timeout=http.session_idle_timeout_s,
        max_sessions=2 * http.max_sessions,
        max_request_body_size=MAX_MESSAGE_BYTES,
        custom_starlette_routes=[Route(WELL_KNOWN, NoOAuthDiscovery())],
    )
    table = SessionTable(http.session_idle_timeout_s, http.max_sessions_per_client, http.max_sessions)
    _gate_endpoint(app, bastion, table)
    return app


def _gate_endpoint(app: Starlette, bastion: Bastion, table: SessionTable) -> None:
    """Put broker/transport/http_gate.py, then http_sessions.py, between the SDK's bearer check and its
    transport, so that only authenticated bodies are read and every session is counted against its
    client, and StaticBearer's 401 in front of that check. Fail closed if the SDK's app is not
    shaped as expected."""
    routes = [route for route in app.routes if isinstance(route, Route) and route.path == MCP_PATH]
    auth = routes[0].endpoint if len(routes) == 1 else None
    if not isinstance(auth, RequireAuthMiddleware) or routes[0].app is not auth:
        raise RuntimeError("the MCP SDK's Streamable HTTP app has an unexpected shape: cannot screen requests")
    keeper = SessionKeeper(auth.app, bastion, table, lambda name: name in bastion.generation.client_names())
    bastion.on_swap(keeper.sweep)  # a reload that revokes a token ends its sessions at once
    auth.app = GatedEndpoint(keeper, bastion)
    routes[0].app = StaticBearer(auth)
    _sweep_while_serving(app, keeper)


def _sweep_while_serving(app: Starlette, keeper: SessionKeeper) -> None:
    """Run the keeper's idle sweep inside the app's lifespan (the SDK's session manager's)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(started: Starlette) -> AsyncIterator[Any]:
        async with inner(started) as state, anyio.create_task_group() as group:
            group.start_soon(keeper.sweep_forever)
            yield state
            group.cancel_scope.cancel()

    app.router.lifespan_context = lifespan


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the broker handles SIGTERM/SIGINT itself (broker/cli/serve.py _stop_on_signal)


def uvicorn_server(app: Starlette, bind: Bind) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=bind.host or "127.0.0.1",
        port=bind.port or 0,
        uds=bind.uds or None,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        proxy_headers=False,
    )
    if bind.uds:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(bind.uds)  # a stale socket from a previous run
    return _Uvicorn(config)
