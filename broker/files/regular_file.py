"""Open a file the broker reads (a log to hand to a worker, the policy, an intel
database): regular files only, and never blocking on the open.

Workers refuse anything else too (workers/main.py): a directory descriptor
would reach host metadata through `..`, a FIFO could stall, a device could do
anything its driver allows. O_NONBLOCK keeps a FIFO planted at the path from
stalling the open itself (and with it the whole broker); the check is made on
the opened descriptor, so a swap after it cannot matter.

`follow_symlinks=False` is for files the server writes itself (the compiled
intel database): a symlink there was planted by someone else. Operator-owned
configuration (the policy file, .mmdb databases) may be a symlink, as config
management often makes it: who can replace such a link can replace the file.
"""

from __future__ import annotations

import errno
import os
import stat

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


def file_kind(mode: int) -> str:
    """'a FIFO', 'a directory', ...: for messages that say why a file was refused."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str, follow_symlinks: bool = True) -> int:
    """A read-only, close-on-exec descriptor of `path`; OSError if it is not a regular file."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise OSError(errno.ELOOP, "a symbolic link, which is refused here", path) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{file_kind(mode)}, not a regular file; only regular files are read", path)
        os.set_blocking(fd, True)  # O_NONBLOCK only kept a FIFO from stalling the open itself
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, max_bytes: int, follow_symlinks: bool = True) -> bytes:
    """The whole content of a regular file of at most `max_bytes` (OSError otherwise)."""
    fd = open_regular(path, follow_symlinks)
    try:
        if os.fstat(fd).st_size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", path)
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:  # it grew meanwhile
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", path)
        return b"".join(chunks)
    finally:
        os.close(fd)
