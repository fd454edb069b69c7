"""What a client may see of a search engine's error message.

An engine's stderr reaches the broker through the worker's Failed frame. The
audit log keeps it whole (broker/pool/outcome.py record); the client gets
this reduced form: one line of printable ASCII, no file system paths (grep
names itself by its full path, and an engine, or a compromised worker, can
name any file), and short. The worker is not trusted to have done any of this.
"""

from __future__ import annotations

import re

MAX_CLIENT_CHARS = 160

# "/usr/bin/grep: " or "rg: " before the message proper.
_PROGRAM = re.compile(r"^\s*(?:\S*/)?(?:grep|rg|egrep)(?:\[[0-9]+\])?:\s*")
# Anything holding a '/' is taken for a path: better one reason lost than a path shown.
_PATHLIKE = re.compile(r"[^\s:]*/[^\s:]*")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def client_text(message: str) -> str:
    """The engine's message fit for a client: path-free, one line, bounded."""
    text = _UNPRINTABLE.sub(" ", message[: MAX_CLIENT_CHARS * 8])
    text = " ".join(text.split())
    text = _PATHLIKE.sub("[path]", _PROGRAM.sub("", text))
    if len(text) > MAX_CLIENT_CHARS:
        text = text[: MAX_CLIENT_CHARS - 3].rstrip() + "..."
    return text or "no message"
