"""Bearer-token authentication for the Streamable HTTP transport.

A presented token is hashed (broker/transport/http_tokens.py) and compared with
every client's digest in constant time; the matching client's name becomes the
caller's identity for audit records and rate limits.

The token is static: there is no OAuth here. A refused request gets 401 with
`WWW-Authenticate: Bearer realm="bastion"` and a description that says so, and
every path under /.well-known/ answers 404, so that a host which tries OAuth
discovery first (RFC 9728 protected-resource metadata, RFC 8414 or OpenID
authorization-server metadata) stops there instead of looping on 401s.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.policy import HttpClient
from broker.transport.http_tokens import MAX_TOKEN_CHARS, digest

REALM = "bastion"
STATIC_TOKEN = (
    "a static bearer token is required (Authorization: Bearer TOKEN, made with bastion token new); "
    "this server offers no OAuth discovery"
)
NO_OAUTH = "this server offers no OAuth: send its static bearer token in the Authorization header"


class PolicyTokens:
    """TokenVerifier over the current policy's clients, asked on every request: a token that
    a reload revokes is refused from the next request on, also on a session already open."""

    def __init__(self, clients: Callable[[], Sequence[HttpClient]]) -> None:
        self._clients = clients

    async def verify_token(self, token: str) -> AccessToken | None:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        presented = digest(token)
        found: HttpClient | None = None
        for client in self._clients():  # no early exit: the time does not say which entry matched
            if hmac.compare_digest(presented, client.token_sha256):
                found = client
        if found is None or found.revoked:
            return None
        # The token itself is not kept: only its client's name travels on.
        return AccessToken(token=f"sha256:{presented[:12]}", client_id=found.name, scopes=[])


def http_client_name() -> str | None:
    """The authenticated HTTP client of the current request, if any."""
    token = get_access_token()
    return token.client_id if token is not None else None


class StaticBearer:
    """In front of the SDK's RequireAuthMiddleware (which stays, and checks again): the 401
    says realm "bastion" and that only a static token is accepted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or isinstance(scope.get("user"), AuthenticatedUser):
            await self.app(scope, receive, send)
            return
        await json_answer(send, 401, {"error": "invalid_token", "error_description": STATIC_TOKEN}, challenge(scope))


def challenge(scope: Scope) -> bytes:
    """The WWW-Authenticate value. RFC 6750 3.1: no error code when no credentials came at all."""
    presented = any(name == b"authorization" for name, _ in scope.get("headers") or [])
    error = 'error="invalid_token", ' if presented else ""
    return f'Bearer realm="{REALM}", {error}error_description="{STATIC_TOKEN}"'.encode()


class NoOAuthDiscovery:
    """Every /.well-known/ path, whatever the method, token or not: 404. (An ASGI class, so
    Starlette routes every method to it.)"""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await json_answer(send, 404, {"error": "not_found", "error_description": NO_OAUTH})


async def json_answer(send: Send, status: int, body: dict[str, str], www_authenticate: bytes | None = None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if www_authenticate is not None:
        headers.append((b"www-authenticate", www_authenticate))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})
