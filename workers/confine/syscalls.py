"""Thin ctypes access to the libc calls and raw syscalls the layers need.

Python 3.11 has no os.unshare, os.mount or os.pivot_root, and nothing for
Landlock or seccomp; these wrappers raise OSError with the real errno so each
layer can turn a failure into a LayerError that names itself.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

if platform.machine() != "x86_64":  # syscall numbers below are x86_64's
    raise ImportError("the Bastion sandbox supports x86_64 Linux only")

NR_CLONE = 56
NR_PIVOT_ROOT = 155
NR_CAPGET = 125
NR_CAPSET = 126
NR_LANDLOCK_CREATE_RULESET = 444
NR_LANDLOCK_ADD_RULE = 445
NR_LANDLOCK_RESTRICT_SELF = 446

CLONE_PARENT = 0x00008000
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def _check(result: int) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def syscall(number: int, *args: object) -> int:
    return _check(_libc.syscall(ctypes.c_long(number), *args))


# Holds the GIL across the call (ctypes.CDLL releases it), so the cloned child
# starts with the interpreter in exactly the state the parent had.
_libc_gil = ctypes.PyDLL(None, use_errno=True)
_libc_gil.syscall.restype = ctypes.c_long


def fork_as_sibling(namespace_flags: int = 0) -> int:
    """clone(CLONE_PARENT | SIGCHLD | namespace_flags): fork(), except that the child's
    parent is the caller's parent, which can then wait for it, read its rusage and
    hold a pidfd as for its own child, and that the child is born in the new
    namespaces (with CLONE_NEWPID: as PID 1 of its own pid namespace). Returns 0 in
    the child, its pid in the caller.

    Only for a single-threaded caller: unlike os.fork() this runs neither
    Python's at-fork hooks nor glibc's (the child's cached thread id stays the
    parent's, which only raise()/pthread_kill() would notice).
    """
    flags = CLONE_PARENT | signal.SIGCHLD | namespace_flags
    return _check(_libc_gil.syscall(ctypes.c_long(NR_CLONE), ctypes.c_ulong(flags), None, None, None, None))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5))


def set_process_name(name: str) -> None:
    """The thread's comm (what ps shows, 15 bytes at most); a cosmetic, so failures are ignored."""
    buffer = ctypes.create_string_buffer(name.encode()[:15])
    _libc.prctl(PR_SET_NAME, ctypes.addressof(buffer), 0, 0, 0)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags))


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)))


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(os.fsencode(target), flags))


def pivot_root(new_root: str, put_old: str) -> None:
    syscall(NR_PIVOT_ROOT, ctypes.c_char_p(os.fsencode(new_root)), ctypes.c_char_p(os.fsencode(put_old)))
