"""Layer: the profile's seccomp filter, default action *kill the process*.

The filter is compiled once in the broker with libseccomp (see
broker/sandbox/seccomp_compile.py) and arrives as BPF bytes in the worker's plan; loading it
is a single prctl. It is the last layer: from here on every syscall outside
the profile's allowlist kills the worker with SIGSYS, which the broker
records as a sandbox violation.
"""

from __future__ import annotations

import ctypes

from workers.confine import syscalls
from workers.confine.layer import LayerError

SOCK_FILTER_BYTES = 8


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply(bpf: bytes) -> None:
    if not bpf or len(bpf) % SOCK_FILTER_BYTES:
        raise LayerError("seccomp", "no compiled filter was provided")
    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(len(bpf) // SOCK_FILTER_BYTES, ctypes.addressof(program))
    try:
        syscalls.prctl(syscalls.PR_SET_SECCOMP, syscalls.SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    except OSError as exc:
        raise LayerError("seccomp", f"cannot load the filter: {exc.strerror}") from None
