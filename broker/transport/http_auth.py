"""Bearer tokens for the Streamable HTTP transport.

The policy holds only SHA-256 digests of the tokens (`[[http.clients]]`), so
neither the policy file nor the audit log ever contains a usable token. A
presented token is hashed and compared with every client's digest in
constant time; the matching client's name becomes the caller's identity for
audit records and rate limits. The SDK's bearer middleware turns a refusal
into 401 with a WWW-Authenticate header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from broker.policy import HttpClient

TOKEN_PREFIX = "bst_"
MAX_TOKEN_CHARS = 512


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class PolicyTokens:
    """TokenVerifier over the policy's clients."""

    def __init__(self, clients: list[HttpClient]) -> None:
        self._clients = list(clients)

    async def verify_token(self, token: str) -> AccessToken | None:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        presented = digest(token)
        found: HttpClient | None = None
        for client in self._clients:  # no early exit: the time does not say which entry matched
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


def paste_lines(name: str, token: str) -> str:
    return f'[[http.clients]]\nname = "{name}"\ntoken_sha256 = "{digest(token)}"\n'
