"""ctypes is already imported by the worker: a raw ptrace(PTRACE_ATTACH) through libc's syscall()."""

import ctypes

SYS_PTRACE = 101
PTRACE_ATTACH = 16

libc = ctypes.CDLL(None, use_errno=True)
if libc.syscall(SYS_PTRACE, PTRACE_ATTACH, PARAMS["test_pid"], 0, 0) == 0:
    report("ESCAPED", "ptrace attached to the test process")
report("BLOCKED", errno.errorcode.get(ctypes.get_errno(), "E?"))
