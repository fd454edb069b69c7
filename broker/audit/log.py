"""Append-only audit log (JSON Lines), written before and after every call.

Each record is one line written with a single write(). A "begin" record is
in the file (the kernel's, so it survives the broker crashing) before any
worker starts; the result is released only once the "end" record is on disk,
which puts the begin there too. Calls make their records durable through
broker/audit/group_commit.py: one fdatasync in a thread covers every record
written before it started, so concurrent calls share syncs and the event loop
never waits on the disk. `write(sync=True)` still syncs in place (start, stop). Every
record carries a sequence number, `prev` (SHA-256 of the previous line) and,
last, `hash` (SHA-256 of the line without its hash field), so `bastion audit
verify` finds an edited, dropped, inserted or reordered line (see
broker/audit/verify.py). Arguments and previews are cut to a bounded size
and redacted (broker/audit/redact.py) before anything is written.

If a record cannot be written, AuditError is raised, whatever was half-written
is cut off again, and the caller refuses the call: no call runs unaudited.

Rotation keeps the chain: when the file passes `max_bytes`, or was renamed or
truncated by an external logrotate, the first record of the new file is an
`audit_continued` record chained to the last record of the old one.

Whoever can write into the audit directory can plant something at the path.
The file is opened without following a symlink and without blocking (a FIFO
would stall the whole broker), then the descriptor itself must be a regular
file owned by the server's effective uid; anything else is refused like an
unwritable log (the call is refused, the reason logged). Nothing is kept
from a refused open, so the next record tries again: once the path is sane
(the planted object removed) a new file is created and continues the chain,
exactly as after an external rename.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import time
from typing import Any, cast

from broker.audit.durable import remove_quietly, sync_directory
from broker.audit.redact import redact
from broker.files.regular_file import file_kind

GENESIS = "0" * 64
MAX_STRING = 1024  # longer argument strings are cut in the audit record
TAIL_BYTES = 1 << 20
CONTINUED = "audit_continued"
HASH_SUFFIX_BYTES = len(',"hash":""}') + 64


class AuditError(Exception):
    """The audit log cannot be opened or written."""


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def seal(body: bytes) -> bytes:
    """Append the record's own hash: `{...}` -> `{...,"hash":"<sha256 of {...}>"}`."""
    return body[:-1] + b',"hash":"' + hashlib.sha256(body).hexdigest().encode() + b'"}'


def unseal(line: bytes) -> tuple[bytes, str] | None:
    """The body a sealed line was hashed over, and the hash it claims (None if unsealed)."""
    if len(line) <= HASH_SUFFIX_BYTES or not line.endswith(b'"}') or line[-HASH_SUFFIX_BYTES:-66] != b',"hash":"':
        return None
    return line[:-HASH_SUFFIX_BYTES] + b"}", line[-66:-2].decode("ascii", "replace")


def _cut(value: Any) -> Any:
    """Bound what a hostile client can make us write, at any depth."""
    if isinstance(value, str) and len(value) > MAX_STRING:
        return value[:MAX_STRING] + f"…[{len(value) - MAX_STRING} more chars]"
    if isinstance(value, dict):
        return {str(key)[:MAX_STRING]: _cut(item) for key, item in list(value.items())[:64]}
    if isinstance(value, list):
        return [_cut(item) for item in value[:64]]
    return value


def _open_locked(path: str) -> int:
    """The audit file, for appending (and reading its tail): a regular file of ours, locked.

    O_RDWR opens a FIFO at once (Linux) and O_NONBLOCK keeps any other special
    file (a tty waiting for carrier) from stalling: the fstat check decides."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "it is a symbolic link, not a regular file") from None
        raise
    try:
        _check_ours(fd)
        os.set_blocking(fd, True)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(errno.EBUSY, "in use by another Bastion process (each server needs its own audit log)") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_ours(fd: int) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, f"it is {file_kind(info.st_mode)}, not a regular file")
    if info.st_uid != os.geteuid():
        raise OSError(errno.EPERM, f"it is owned by uid {info.st_uid}, not by this server's uid {os.geteuid()}")


class AuditLog:
    def __init__(self, path: str, max_bytes: int = 0, keep: int = 10) -> None:
        self.path = path
        self.max_bytes = max_bytes  # 0: never rotate by size
        self.keep = keep
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            self._fd = _open_locked(path)
        except OSError as exc:
            raise AuditError(f"cannot open audit log {path}: {exc.strerror}") from None
        self._seq, self._prev = self._resume()
        self._size = os.fstat(self._fd).st_size
        self._durable_seq = self._seq  # records up to here are on disk (what we resumed from is)

    @property
    def head(self) -> tuple[int, str]:
        """Sequence number and hash of the last record written (for anchoring elsewhere)."""
        return self._seq, self._prev

    @property
    def durable_seq(self) -> int:
        """The last record known to be on disk (records written with sync=False may follow it)."""
        return self._durable_seq

    def sync_handle(self) -> tuple[int, int]:
        """A duplicate of the file's descriptor and the last record a sync of it will cover.

        For broker/audit/group_commit.py, which syncs in a thread while this
        log may rotate (and close its own descriptor) on the event loop."""
        return os.dup(self._fd), self._seq

    def mark_durable(self, seq: int) -> None:
        self._durable_seq = max(self._durable_seq, seq)

    def _resume(self) -> tuple[int, str]:
        """Continue the chain of an existing file from its last record (read through
        the checked descriptor: the path may have been swapped meanwhile)."""
        size = os.fstat(self._fd).st_size
        start = max(0, size - TAIL_BYTES)
        tail = os.pread(self._fd, size - start, start)
        if not tail:
            return 0, GENESIS
        if not tail.endswith(b"\n"):
            raise AuditError(
                f"audit log {self.path} ends with an incomplete record; inspect it with `bastion audit verify`"
                " and repair it before serving"
            )
        last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            seq = int(json.loads(last)["seq"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"audit log {self.path} does not end with a Bastion record") from None
        return seq, line_hash(last)

    def write(self, event: str, *, sync: bool = True, **fields: Any) -> int:
        """Append one record (after any rotation it needs); return its sequence number.
        With sync (the default) it and every record before it are on disk on return."""
        try:
            self._follow_rotation()
            line = self._line(event, fields)
            if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
                line = self._line(event, fields)
            self._append(line, sync)
        except OSError as exc:
            raise AuditError(f"cannot write audit log {self.path}: {exc.strerror or exc}") from None
        return self._seq

    def _line(self, event: str, fields: dict[str, Any]) -> bytes:
        redacted = cast("dict[str, object]", redact(_cut(fields)))  # a dict comes back a dict
        record = {"seq": self._seq + 1, "ts": _now(), "event": event, **redacted, "prev": self._prev}
        body = json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str).encode()
        return seal(body) + b"\n"

    def _append(self, line: bytes, sync: bool = True) -> None:
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
            if sync:
                os.fdatasync(self._fd)
        except OSError:
            self._cut_back()
            raise
        self._size += len(line)
        self._seq += 1
        self._prev = line_hash(line)
        if sync:
            self._durable_seq = self._seq

    def _cut_back(self) -> None:
        """Remove a half-written record so the file still ends with a whole line."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            pass  # verify will report the torn line; the next write tries again first

    # --- rotation ----------------------------------------------------------

    def _follow_rotation(self) -> None:
        """Notice an external logrotate (rename+create or copytruncate) and continue the chain."""
        current = os.fstat(self._fd)
        try:
            on_disk = os.stat(self.path, follow_symlinks=False)
            renamed = (on_disk.st_dev, on_disk.st_ino) != (current.st_dev, current.st_ino)
        except FileNotFoundError:
            renamed = True
        if renamed:
            previous = _name_of(self._fd)
            self._reopen()
            self._append(self._line(CONTINUED, {"reason": "renamed_externally", "previous_file": previous}))
        elif current.st_size < self._size:
            self._size = current.st_size
            self._append(self._line(CONTINUED, {"reason": "truncated_externally", "previous_file": None}))
        elif current.st_size > self._size:
            self._size = current.st_size  # foreign bytes: verify reports them; our chain goes on

    def _rotate(self) -> None:
        """Shift path.N-1 -> path.N ... path -> path.1, start a new file chained to the old."""
        for index in range(self.keep, 0, -1):
            older = f"{self.path}.{index}"
            if index == self.keep:
                remove_quietly(older)
            elif os.path.lexists(older):
                os.rename(older, f"{self.path}.{index + 1}")
        os.rename(self.path, f"{self.path}.1")
        self._reopen()
        self._append(
            self._line(CONTINUED, {"reason": "size_limit", "previous_file": os.path.basename(self.path) + ".1"})
        )

    def _sync_pending(self) -> None:
        if self._durable_seq < self._seq:
            os.fdatasync(self._fd)
            self._durable_seq = self._seq

    def _reopen(self) -> None:
        self._sync_pending()  # the old file's last record, before we let go of it
        fd = _open_locked(self.path)
        os.close(self._fd)
        self._fd = fd
        self._size = os.fstat(fd).st_size
        sync_directory(os.path.dirname(os.path.abspath(self.path)))

    def close(self) -> None:
        try:
            self._sync_pending()
        finally:
            os.close(self._fd)


def _name_of(fd: int) -> str | None:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return None if target.endswith(" (deleted)") else os.path.basename(target)


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
