"""What the HTTP transport knows about a request's client connection, for the handlers.

broker/transport/http_gate.py puts a Peer into each POST's ASGI scope and sets `gone`
when the server reads `http.disconnect` (the client closed or reset its TCP
connection). The SDK hands the handler a starlette Request built on that
scope (ctx.request), which is how the Peer reaches broker/transport/request_guard.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

SCOPE_KEY = "bastion.peer"
METHOD_KEY = "bastion.method"  # a screened POST's JSON-RPC method (None: not a request), for http_sessions.py


@dataclass
class Peer:
    gone: anyio.Event = field(default_factory=anyio.Event)


def peer_of(request: object) -> Peer | None:
    """The Peer of an HTTP request (None over stdio, where ctx.request is None)."""
    scope = getattr(request, "scope", None)
    found = scope.get(SCOPE_KEY) if isinstance(scope, dict) else None
    return found if isinstance(found, Peer) else None
