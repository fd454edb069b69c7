"""Layer: a private mount namespace whose root is an empty, read-only tmpfs.

The broker lists what a worker kind may see (broker/sandbox/binds.py): its
executables, the shared libraries they load and any extra read-only paths
from the profile. The worker binds exactly those, read-only, nosuid and
nodev, at their usual paths into a fresh tmpfs, makes the tmpfs read-only,
pivots into it and detaches the old root. There is no /etc, /home,
/proc, /dev, /tmp or log directory: the only file a worker can read that the
broker did not list is the descriptor it is handed.
"""

from __future__ import annotations

import os
import stat

from workers.confine import syscalls
from workers.confine.layer import LayerError

MOUNT_POINT = "/tmp"  # only a place to build the root on; detached afterwards


def _existing_flags(fd: int) -> int:
    """Flags of the source mount that a bind inside a user namespace must keep."""
    flags = os.statvfs(f"/proc/self/fd/{fd}").f_flag
    kept = 0
    for st_flag, ms_flag in (
        (os.ST_NOEXEC, syscalls.MS_NOEXEC),
        (os.ST_NOSUID, syscalls.MS_NOSUID),
        (os.ST_NODEV, syscalls.MS_NODEV),
    ):
        if flags & st_flag:
            kept |= ms_flag
    return kept


def _bind_read_only(fd: int, target: str) -> None:
    syscalls.mount(f"/proc/self/fd/{fd}", target, None, syscalls.MS_BIND)
    flags = syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV
    syscalls.mount(None, target, None, flags | _existing_flags(fd))


def _make_target(root: str, path: str, is_dir: bool) -> str:
    target = root + path
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if is_dir:
        os.makedirs(target, mode=0o755, exist_ok=True)
    elif not os.path.exists(target):
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o444))
    return target


def apply(binds: list[str], tmpfs_bytes: int) -> None:
    try:
        _build_and_pivot(binds, tmpfs_bytes)
    except OSError as exc:
        raise LayerError("filesystem", f"{exc.strerror or exc}") from None
    leftover = set(os.listdir("/")) - {path.split("/")[1] for path in binds}
    if leftover:
        raise LayerError("filesystem", f"unexpected entries in the worker's root: {sorted(leftover)}")


def _build_and_pivot(binds: list[str], tmpfs_bytes: int) -> None:
    # Open every source first: the tmpfs below may hide where some of them live.
    sources = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in binds}
    try:
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        root = MOUNT_POINT
        syscalls.mount(
            "bastion-root",
            root,
            "tmpfs",
            syscalls.MS_NOSUID | syscalls.MS_NODEV,
            f"size={tmpfs_bytes},nr_inodes=1024,mode=0755",
        )
        for path, fd in sources.items():
            target = _make_target(root, path, stat.S_ISDIR(os.fstat(fd).st_mode))
            _bind_read_only(fd, target)
        syscalls.mount(
            None, root, None, syscalls.MS_REMOUNT | syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV
        )
    finally:
        for fd in sources.values():
            os.close(fd)
    os.chdir(root)
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")
