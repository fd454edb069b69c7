"""Start the search engine (grep or ripgrep) as a child that cannot outlive the worker.

Inside its own pid namespace the worker is PID 1, and when PID 1 exits the
kernel kills every process of the namespace: the engine dies with the worker,
so the cheap posix_spawn (vfork) is enough. A worker without a pid namespace
(the layer downgraded, or a profile without "pid") forks instead, and the
child takes the parent-death signal between fork and exec, once its
credentials are final, then checks that its parent is still the worker: the
worker may have died before the signal was set. That costs ~1 ms more CPU per
engine (measured on the 2-core reference host), so it is not the default.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
EXIT_PARENT_GONE = 71
EXIT_EXEC_FAILED = 127
_libc = ctypes.CDLL(None, use_errno=True)


def start(path: str, argv: list[str], env: dict[str, str], stdin: int, stdout: int, stderr: int) -> int:
    """The engine's pid; it reads `stdin` and writes `stdout`, `stderr` (descriptors above 2)."""
    if os.getpid() == 1:
        actions = [(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, stderr, 2)]
        return os.posix_spawn(path, argv, env, file_actions=actions)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _become_engine(parent, path, argv, env, (stdin, stdout, stderr))
    return pid


def _become_engine(parent: int, path: str, argv: list[str], env: dict[str, str], streams: tuple[int, int, int]) -> None:
    """In the forked child. Never returns."""
    try:
        for target, fd in enumerate(streams):
            os.dup2(fd, target)
        if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
            os._exit(EXIT_PARENT_GONE)
        os.execve(path, argv, env)
    except BaseException:  # noqa: BLE001 - a forked child must never return into the worker's code
        pass
    os._exit(EXIT_EXEC_FAILED)
