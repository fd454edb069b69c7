"""Open a name beneath a directory descriptor without following any symlink.

The broker runs as root and log directories often belong to the services that
write them, so a name inside one may at any moment be a symlink planted to make
the broker open something else. openat2(2) (Linux >= 5.6) refuses that in one
call: RESOLVE_BENEATH keeps the lookup under the directory (absolute paths and
climbing '..' fail with EXDEV), RESOLVE_NO_SYMLINKS refuses a symlink at any
component and RESOLVE_NO_MAGICLINKS the /proc kind (both ELOOP). Where the
kernel lacks openat2 (ENOSYS) a walk gives the same guarantees: one component
at a time, each opened relative to the last with O_NOFOLLOW, intermediate ones
as directories only. Any other openat2 failure (a seccomp filter's EPERM, say)
is the caller's error: this never falls back to a call that might follow links.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

# New syscalls share one number on every architecture since Linux 5.1 (alpha aside).
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
NO_FOLLOW_BENEATH = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH
# The kernel says EAGAIN when a concurrent rename might have let a lookup escape.
EAGAIN_RETRIES = 8


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """The raw syscall; OSError with the kernel's errno. O_CLOEXEC is always added
    (openat2, unlike Python's os.open, would otherwise leave it off)."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    encoded = os.fsencode(path)
    fd = _libc.syscall(
        ctypes.c_long(SYS_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(encoded),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def open_beneath(dirfd: int, path: str, flags: int) -> int:
    """A descriptor of `path` (relative) beneath `dirfd`, no symlink followed anywhere.

    ELOOP: a symlink on the way; EXDEV: the path would leave `dirfd`."""
    for _ in range(EAGAIN_RETRIES):
        try:
            return _not_a_link(openat2(dirfd, path, flags | os.O_NOFOLLOW, NO_FOLLOW_BENEATH), flags, path)
        except OSError as exc:
            # ENOTDIR is also what O_DIRECTORY on a final symlink gets: the walk, which
            # follows nothing either, tells the two apart (ELOOP for a link).
            if exc.errno in (errno.ENOSYS, errno.ENOTDIR):
                return open_by_walk(dirfd, path, flags)
            if exc.errno != errno.EAGAIN:
                raise
    raise OSError(errno.EAGAIN, "the directory kept changing during the lookup", path)


def _eloop(path: str) -> OSError:
    return OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)


def _not_a_link(fd: int, flags: int, path: str) -> int:
    """O_PATH|O_NOFOLLOW hands out a descriptor of a final symlink itself (even under
    RESOLVE_NO_SYMLINKS): refuse that too."""
    if flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise _eloop(path)
    return fd


def _parts(path: str) -> list[str]:
    if path.startswith("/"):
        raise OSError(errno.EXDEV, "an absolute path does not stay beneath the directory", path)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:  # openat2 allows a '..' that stays beneath; the walk has no cheap way to tell
        raise OSError(errno.EXDEV, "'..' is refused beneath the directory", path)
    return parts or ["."]


def is_symlink_at(dirfd: int, name: str) -> bool:
    """Is `name` (one component) in `dirfd` a symlink now?"""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_component(dirfd: int, name: str, flags: int) -> int:
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError as exc:
        # O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR: report it as openat2 does.
        if exc.errno in (errno.ENOTDIR, errno.ELOOP) and is_symlink_at(dirfd, name):
            raise _eloop(name) from None
        raise
    return _not_a_link(fd, flags, name)


def open_by_walk(dirfd: int, path: str, flags: int) -> int:
    """The fallback for kernels without openat2: same contract as open_beneath."""
    parts = _parts(path)
    current = dirfd
    try:
        for part in parts[:-1]:
            step = _open_component(current, part, os.O_PATH | os.O_DIRECTORY)
            if current != dirfd:
                os.close(current)
            current = step
        return _open_component(current, parts[-1], flags)
    finally:
        if current != dirfd:
            os.close(current)
