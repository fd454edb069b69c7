"""HTTP clients' bearer tokens as the policy knows them: made, digested, pasted.

Standard library only, so `bastion token new` starts without the MCP SDK. The
policy holds only SHA-256 digests (`[[http.clients]]`): neither the policy file
nor the audit log ever contains a usable token. Checking a presented token is
broker/transport/http_auth.py's.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "bst_"
MAX_TOKEN_CHARS = 512


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def paste_lines(name: str, token: str) -> str:
    return f'[[http.clients]]\nname = "{name}"\ntoken_sha256 = "{digest(token)}"\n'
