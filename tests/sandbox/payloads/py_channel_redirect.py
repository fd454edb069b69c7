"""Re-aim the worker's own socket (its channel to the broker) at the test's abstract unix listener.

sendto() is allowlisted (workers send frames); the address must be refused.
libc's sendto is called through ctypes: building a Python socket object
around the descriptor would itself need syscalls outside the allowlist.
"""

import ctypes
import stat
import struct

MAX_FD = 32
AF_UNIX = 1


def is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def abstract_address(name: str) -> bytes:
    return struct.pack("=H", AF_UNIX) + b"\0" + name.encode()


candidates = [fd for fd in range(MAX_FD) if is_socket(fd)]
if not candidates:
    report("BLOCKED", "no socket descriptor to reuse")
libc = ctypes.CDLL(None, use_errno=True)
address = abstract_address(PARAMS["abstract_name"])
errors = []
for fd in candidates:
    if libc.sendto(fd, b"pwned", 5, 0, address, len(address)) >= 0:
        report("ESCAPED", f"sent to the abstract listener through fd {fd}")
    errors.append(errno.errorcode.get(ctypes.get_errno(), "E?"))
report("BLOCKED", f"{' '.join(sorted(set(errors)))} on socket fds {candidates}")
