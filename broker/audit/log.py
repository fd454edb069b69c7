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

Several servers (an IDE's and a desktop host's `bastion serve` on one policy)
may share the file. Each append takes its flock, chains to the file's last
record whoever wrote it, and writes one line; every record names the server
instance that wrote it. So the file is one chain, in the order of the appends.

Rotation keeps the chain: when the file passes `max_bytes`, or was renamed or
truncated by an external logrotate or a sibling server, the first record of
the new file is an `audit_continued` record chained to the last record of the
old one, written by whichever server comes to the new file first.

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

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from broker.audit.durable import remove_quietly, sync_directory
from broker.audit.log_file import name_of, open_checked, same_file, wait_for_append_lock
from broker.audit.redact import redact
from broker.files.output_dir import OutputDirError, prepare_directory

if TYPE_CHECKING:  # the signing code (and cryptography) loads only where a key is configured
    from broker.audit.checkpoint import Signer

log = logging.getLogger("bastion.audit")

GENESIS = "0" * 64
MAX_STRING = 1024  # longer argument strings are cut in the audit record
TAIL_BYTES = 1 << 20
CONTINUED = "audit_continued"
CHECKPOINT = "checkpoint"  # a signed checkpoint record (broker/audit/checkpoint.py)
HASH_SUFFIX_BYTES = len(',"hash":""}') + 64
MAX_REOPENS = 8  # renames seen in a row before giving up (something keeps replacing the file)


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


def server_instance() -> str:
    """A name for this server process in its records: pid and a random part (pids are reused)."""
    return f"{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Sealing:
    """When this server writes signed checkpoints, and with which key."""

    signer: Signer
    every: int = 100  # records
    interval_s: float = 60.0

    def due(self, unsealed: int, sealed_at: float) -> bool:
        return unsealed >= self.every or (unsealed > 0 and time.monotonic() - sealed_at >= self.interval_s)


class AuditLog:
    """One server's writer of an audit log that several servers may share.

    Each append takes the file's lock, catches up with what sibling servers
    appended (their last record is the one to chain to) and follows a rotation
    or truncation any of them, or logrotate, did; then writes one line."""

    def __init__(
        self,
        path: str,
        max_bytes: int = 0,
        keep: int = 10,
        instance: str | None = None,
        sealing: Sealing | None = None,
        state_root: str | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes  # 0: never rotate by size
        self.keep = keep
        self.instance = instance or server_instance()
        self.sealing = sealing
        self._unsealed = 0  # records this server wrote since its last checkpoint
        self._sealed_at = time.monotonic()
        self._seq, self._prev, self._size = 0, GENESIS, 0
        try:
            prepare_directory(path, state_root)  # only the state directory is created when missing
            self._fd = open_checked(path)
        except OutputDirError as exc:
            raise AuditError(f"cannot open audit log {path}: {exc}") from None
        except OSError as exc:
            raise AuditError(f"cannot open audit log {path}: {exc.strerror}") from None
        try:
            with self._locked():
                self._size = -1  # force reading the tail: continue the chain from the file's last record
                self._catch_up(None, None)
        except OSError as exc:
            os.close(self._fd)
            raise AuditError(f"cannot open audit log {path}: {exc.strerror or exc}") from None
        except AuditError:
            os.close(self._fd)
            raise
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

    def write(self, event: str, *, sync: bool = True, **fields: Any) -> int:
        """Append one record (after any rotation it needs); return its sequence number.
        With sync (the default) it and every record before it are on disk on return."""
        redacted = cast("dict[str, object]", redact(_cut(fields)))  # a dict comes back a dict; outside the lock
        try:
            with self._locked() as stale:
                self._catch_up(*stale)
                line = self._line(event, redacted)
                if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                    self._rotate()
                    line = self._line(event, redacted)
                self._append(line, sync)
                seq = self._seq
                self._unsealed += 1
                if self.sealing is not None and self.sealing.due(self._unsealed, self._sealed_at):
                    self._seal()
        except OSError as exc:
            raise AuditError(f"cannot write audit log {self.path}: {exc.strerror or exc}") from None
        return seq

    def seal_if_due(self, force: bool = False) -> None:
        """Write a checkpoint if records are unsealed and one is due (a periodic task calls
        this, so a quiet server's last records do not stay unsealed for long)."""
        if self.sealing is None or not self._unsealed:
            return
        if not (force or self.sealing.due(self._unsealed, self._sealed_at)):
            return
        try:
            with self._locked() as stale:
                self._catch_up(*stale)
                self._seal()
        except OSError as exc:
            raise AuditError(f"cannot write audit log {self.path}: {exc.strerror or exc}") from None

    def _seal(self) -> None:
        """Under the lock: a signed checkpoint of the record just written (not synced on its
        own: the next sync covers it), and the same checkpoint on stderr, a copy elsewhere."""
        assert self.sealing is not None
        checkpoint = self.sealing.signer.sign(self._seq, self._prev)
        self._append(self._line(CHECKPOINT, checkpoint.fields()), sync=False)
        self._unsealed, self._sealed_at = 0, time.monotonic()
        log.info("audit checkpoint %s", checkpoint.token())

    def _line(self, event: str, redacted: dict[str, object]) -> bytes:
        record = {"seq": self._seq + 1, "ts": _now(), "event": event, "server": self.instance, **redacted}
        record["prev"] = self._prev
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

    # --- sharing the file: lock, catch up, follow rotations ----------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[tuple[str | None, str | None]]:
        """Hold the lock of the file now at the path; yields why our view of it is stale
        (renamed or truncated by someone else) and the name of the file we were writing."""
        reason: str | None = None
        previous: str | None = None
        for _ in range(MAX_REOPENS):
            wait_for_append_lock(self._fd)
            if same_file(self._fd, self.path):
                break
            # Renamed (logrotate, or a sibling server's rotation): let go, take what is there now.
            previous = previous or name_of(self._fd)
            reason = "renamed_externally"
            self._reopen(open_checked(self.path))
        else:
            raise OSError(errno.EAGAIN, "the file keeps being replaced")
        if reason is None and os.fstat(self._fd).st_size < self._size:
            reason = "truncated_externally"
        try:
            yield reason, previous
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _catch_up(self, reason: str | None, previous: str | None) -> None:
        """Under the lock: chain to the file's last record, whoever wrote it. A file that
        is empty though our chain has records was rotated or truncated without a
        continuation record: this server writes it."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            self._size = 0
            if self._seq and reason is not None:
                self._append(self._line(CONTINUED, {"reason": reason, "previous_file": previous}))
            return
        if size != self._size or reason is not None:
            opening = self._size < 0 and reason is None
            self._size = size
            last = self._last_record(size, opening)
            if last is not None:
                self._seq, self._prev = last

    def _last_record(self, size: int, opening: bool) -> tuple[int, str] | None:
        """Sequence number and hash of the file's last line (read through our checked
        descriptor: the path may have been swapped meanwhile).

        At start-up a file that does not end with a whole Bastion record is refused.
        Later, foreign bytes there (no server writes half a line: each append is one
        write, cut back if short) are left for `audit verify` to report, and our chain
        goes on; a torn line is ended first, so our own record stays a whole line."""
        start = max(0, size - TAIL_BYTES)
        tail = os.pread(self._fd, size - start, start)
        problem = None
        if not tail.endswith(b"\n"):
            problem = (
                "ends with an incomplete record; inspect it with `bastion audit verify` and repair it before serving"
            )
        else:
            last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
            try:
                return int(json.loads(last)["seq"]), line_hash(last)
            except (ValueError, KeyError, TypeError):
                problem = "does not end with a Bastion record"
        if opening:
            raise AuditError(f"audit log {self.path} {problem}")
        log.warning("audit log %s %s; appending after it", self.path, problem.split(";")[0])
        if not tail.endswith(b"\n"):
            self._append_raw(b"\n")
        return None

    def _append_raw(self, data: bytes) -> None:
        if os.write(self._fd, data) != len(data):
            raise OSError(errno.ENOSPC, "short write")
        self._size += len(data)

    def _rotate(self) -> None:
        """Shift path.N-1 -> path.N ... path -> path.1 and start a new file chained to the old.

        The new file is made and locked under a temporary name first, so a sibling
        server that notices the rename waits for its continuation record."""
        fresh = f"{self.path}.rotating"
        remove_quietly(fresh)  # left by a server that died mid-rotation
        new_fd = open_checked(fresh, exclusive=True)
        try:
            fcntl.flock(new_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else can know it yet
            for index in range(self.keep, 0, -1):
                older = f"{self.path}.{index}"
                if index == self.keep:
                    remove_quietly(older)
                elif os.path.lexists(older):
                    os.rename(older, f"{self.path}.{index + 1}")
            os.rename(self.path, f"{self.path}.1")
            os.rename(fresh, self.path)
        except BaseException:
            os.close(new_fd)
            raise
        self._reopen(new_fd)
        self._size = 0
        self._append(
            self._line(CONTINUED, {"reason": "size_limit", "previous_file": os.path.basename(self.path) + ".1"})
        )

    def _sync_pending(self) -> None:
        if self._durable_seq < self._seq:
            os.fdatasync(self._fd)
            self._durable_seq = self._seq

    def _reopen(self, fd: int) -> None:
        """Switch to `fd` (the file now at the path); closing the old one drops its lock."""
        try:
            self._sync_pending()  # the old file's last record, before we let go of it
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd = fd
        self._size = -1  # unknown: the next catch-up reads its tail
        sync_directory(os.path.dirname(os.path.abspath(self.path)))

    def close(self) -> None:
        try:
            self.seal_if_due(force=True)  # the last records, sealed before we stop
        except AuditError as exc:
            log.error("%s; the last records stay unsealed", exc)
        try:
            self._sync_pending()
        finally:
            os.close(self._fd)


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
