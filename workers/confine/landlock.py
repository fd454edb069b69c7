"""Layer: Landlock, denying every filesystem and network access not listed.

The ruleset handles every access right this kernel's Landlock ABI knows, so
anything not explicitly allowed is denied: the worker may read and execute
its executables and libraries, read the profile's read-only paths, and
nothing else (no directory listing, no writes, no device ioctls, no TCP bind
or connect). Scopes (ABI 6+) stop it from reaching abstract unix sockets or
signalling processes outside its own Landlock domain. Descriptors opened
before this point (the channel, the handed-over log) keep working.
"""

from __future__ import annotations

import ctypes
import os

from workers.confine import syscalls
from workers.confine.layer import LayerError

CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
# Rights by the ABI version that introduced them: v1 has bits 0-12.
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPES = {"abstract_unix_socket": 1 << 0, "signal": 1 << 1}
SCOPES_ABI = 6  # the first ABI with scopes
FILE_ONLY_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (1 << 14) | (1 << 15)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    try:
        return syscalls.syscall(
            syscalls.NR_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION)
        )
    except OSError:
        return 0


def _fs_rights(abi: int) -> int:
    return max(rights for version, rights in FS_RIGHTS_BY_ABI.items() if version <= abi)


def _ruleset(abi: int, scopes: list[str]) -> int:
    attr = _RulesetAttr(_fs_rights(abi), 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net, size = NET_BIND_TCP | NET_CONNECT_TCP, 16
    if abi >= SCOPES_ABI:
        for scope in scopes:
            attr.scoped |= SCOPES[scope]
        size = 24
    return syscalls.syscall(
        syscalls.NR_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
    )


def _allow(ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not os.path.isdir(path):
            rights &= FILE_ONLY_RIGHTS
        rule = _PathBeneathAttr(rights, fd)
        syscalls.syscall(
            syscalls.NR_LANDLOCK_ADD_RULE,
            ctypes.c_int(ruleset),
            ctypes.c_int(RULE_PATH_BENEATH),
            ctypes.byref(rule),
            ctypes.c_uint32(0),
        )
    finally:
        os.close(fd)


def apply(read_exec: list[str], read_only: list[str], scopes: list[str]) -> str:
    """Restrict the worker; return a description such as 'abi 7'."""
    abi = abi_version()
    if abi < 1:
        raise LayerError("landlock", "Landlock is not supported or not enabled by this kernel")
    try:
        ruleset = _ruleset(abi, scopes)
        try:
            for path in read_exec:
                _allow(ruleset, path, FS_READ_FILE | FS_EXECUTE)
            for path in read_only:
                _allow(ruleset, path, FS_READ_FILE | FS_READ_DIR)
            syscalls.syscall(syscalls.NR_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
        finally:
            os.close(ruleset)
    except OSError as exc:
        raise LayerError("landlock", f"cannot restrict the worker: {exc.strerror}") from None
    missing = [name for name in scopes if abi < SCOPES_ABI]
    return f"abi {abi}" + (f", scopes unavailable: {', '.join(missing)}" if missing else "")
