"""Append-only audit log (JSON Lines), written before and after every call.

Each record is one line written with a single write() and flushed to disk
(fdatasync) before the call goes on, so a "begin" record exists before any
worker starts. Records carry a sequence number and `prev`, the SHA-256 of
the previous line, which chains the file so that an edited, dropped or
reordered line is detectable. If a record cannot be written, AuditError is
raised and the caller refuses the call: no call runs unaudited.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

GENESIS = "0" * 64
MAX_STRING = 1024  # longer argument strings are cut in the audit record
TAIL_BYTES = 1 << 20


class AuditError(Exception):
    """The audit log cannot be opened or written."""


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _cut(value: Any) -> Any:
    """Bound what a hostile client can make us write, at any depth."""
    if isinstance(value, str) and len(value) > MAX_STRING:
        return value[:MAX_STRING] + f"…[{len(value) - MAX_STRING} more chars]"
    if isinstance(value, dict):
        return {str(key)[:MAX_STRING]: _cut(item) for key, item in list(value.items())[:64]}
    if isinstance(value, list):
        return [_cut(item) for item in value[:64]]
    return value


class AuditLog:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            self._fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot open audit log {path}: {exc.strerror}") from None
        self._seq, self._prev = self._resume()

    def _resume(self) -> tuple[int, str]:
        """Continue the chain of an existing file from its last record."""
        with open(self.path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAIL_BYTES))
            tail = file.read()
        if not tail:
            return 0, GENESIS
        if not tail.endswith(b"\n"):
            raise AuditError(f"audit log {self.path} ends with an incomplete record; inspect and repair it before serving")
        last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            seq = int(json.loads(last)["seq"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"audit log {self.path} does not end with a Bastion record") from None
        return seq, line_hash(last)

    def write(self, event: str, **fields: Any) -> int:
        """Durably append one record; return its sequence number."""
        record = {"seq": self._seq + 1, "ts": _now(), "event": event, **_cut(fields), "prev": self._prev}
        line = (json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str) + "\n").encode()
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            os.fdatasync(self._fd)
        except OSError as exc:
            raise AuditError(f"cannot write audit log: {exc}") from None
        self._seq += 1
        self._prev = line_hash(line)
        return self._seq

    def close(self) -> None:
        os.close(self._fd)


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
