"""Layer: no capabilities in any set, including the bounding and ambient sets.

Run in two steps around the identity change: the bounding set must be
emptied while the worker still holds CAP_SETPCAP, and the remaining sets are
cleared (and verified empty) once the worker no longer runs as root.
"""

from __future__ import annotations

import ctypes
import errno

from workers.confine import syscalls
from workers.confine.layer import LayerError

CAPABILITY_VERSION_3 = 0x20080522
MAX_CAPABILITIES = 64


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _known_capabilities() -> range:
    for cap in range(MAX_CAPABILITIES):
        try:
            syscalls.prctl(syscalls.PR_CAPBSET_READ, cap)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return range(cap)
            raise
    return range(MAX_CAPABILITIES)


def drop_bounding() -> None:
    try:
        for cap in _known_capabilities():
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as exc:
        raise LayerError("capabilities", f"cannot empty the bounding set: {exc.strerror}") from None


def clear_all() -> None:
    header = _Header(CAPABILITY_VERSION_3, 0)
    empty = (_Data * 2)()
    try:
        syscalls.syscall(syscalls.NR_CAPSET, ctypes.byref(header), ctypes.byref(empty))
    except OSError as exc:
        raise LayerError("capabilities", f"capset: {exc.strerror}") from None
    verify()


def verify() -> None:
    header = _Header(CAPABILITY_VERSION_3, 0)
    current = (_Data * 2)()
    syscalls.syscall(syscalls.NR_CAPGET, ctypes.byref(header), ctypes.byref(current))
    if any(getattr(half, name) for half in current for name in ("effective", "permitted", "inheritable")):
        raise LayerError("capabilities", "capabilities remain after dropping them")
    if any(syscalls.prctl(syscalls.PR_CAPBSET_READ, cap) for cap in _known_capabilities()):
        raise LayerError("capabilities", "the bounding set is not empty")
