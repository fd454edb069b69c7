"""The audit file on disk: opened as a regular file of this server's, never through a
symlink or into a FIFO, and locked for each append by whichever server shares it
(broker/audit/log.py writes the records)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from broker.files.regular_file import file_kind

LOCK_WAIT_S = 2.0  # a sibling server holds the lock for one append: microseconds
LOCK_RETRY_S = 0.0005


def open_checked(path: str, exclusive: bool = False) -> int:
    """The audit file, for appending (and reading its tail): a regular file of ours.

    O_RDWR opens a FIFO at once (Linux) and O_NONBLOCK keeps any other special
    file (a tty waiting for carrier) from stalling: the fstat check decides.
    `exclusive`: create it, failing if the name exists (a rotation's new file)."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags | (os.O_EXCL if exclusive else 0), 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "it is a symbolic link, not a regular file") from None
        raise
    try:
        check_ours(fd)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def wait_for_append_lock(fd: int) -> None:
    """Take the file's append lock, waiting a bounded time for a sibling server's append."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OSError(errno.EBUSY, f"another process has held its lock for over {LOCK_WAIT_S:g} s") from None
            time.sleep(LOCK_RETRY_S)


def check_ours(fd: int) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, f"it is {file_kind(info.st_mode)}, not a regular file")
    if info.st_uid != os.geteuid():
        raise OSError(errno.EPERM, f"it is owned by uid {info.st_uid}, not by this server's uid {os.geteuid()}")


def same_file(fd: int, path: str) -> bool:
    current = os.fstat(fd)
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (current.st_dev, current.st_ino)


def name_of(fd: int) -> str | None:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return None if target.endswith(" (deleted)") else os.path.basename(target)
