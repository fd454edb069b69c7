"""Open an operator-configured file to hand to a worker: regular files only.

Workers refuse anything else too (workers/main.py): a directory descriptor
would reach host metadata through `..`, a FIFO could stall, a device could do
anything its driver allows.
"""

from __future__ import annotations

import errno
import os
import stat


def open_regular(path: str) -> int:
    """A read-only, close-on-exec descriptor of `path`; OSError if it is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file; only regular files are handed to workers", path)
        os.set_blocking(fd, True)  # O_NONBLOCK only kept a FIFO from stalling the open itself
    except BaseException:
        os.close(fd)
        raise
    return fd
