"""The broker's side of the launcher (workers/launcher.py), which forks workers.

A worker forked from the already-imported launcher is confined and ready for
a few ms of CPU instead of ~55 ms for a fresh interpreter (docs/PERFORMANCE.md):
the broker's own child (CLONE_PARENT), born PID 1 of its own pid namespace,
in its own session and cgroup, sent its Setup by the broker, confining itself before it
reads anything untrusted. The launcher sees no client input: only Fork frames
from the broker, each with the socket the new worker will use.

If the launcher dies it is started again for the next worker; if it cannot be
started at all, no worker can be, and the pool reports SandboxUnavailable.
`bastion sandbox run` and `doctor` start a launcher for their one worker
(spawn_one), so every worker is born the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess

import anyio

from bastion_wire.plan import Plan
from bastion_wire.protocol import Fork, Forked, ProtocolError, encode_frame, from_launcher_reader
from broker.pool.worker_process import SandboxUnavailable, Worker, python_argv, send_setup, worker_cgroup
from broker.sandbox.cgroup import CgroupHost

log = logging.getLogger("bastion.launcher")

BOOT = "import sys; sys.path[:0] = sys.argv[3:]; from workers.launcher import run; run(sys.argv[1:3])"
REPLY_TIMEOUT_S = 10.0  # the first reply waits for the launcher's imports
STOP_TIMEOUT_S = 5.0


class Launcher:
    """One launcher process, started on first use and again if it dies."""

    def __init__(self, stderr: int | None = subprocess.DEVNULL, stdout: int | None = subprocess.DEVNULL) -> None:
        self._stderr = stderr
        self._stdout = stdout  # the workers' too: DEVNULL while serving, never the MCP stdio stream
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = anyio.Lock()

    def _start(self) -> socket.socket:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(
                python_argv(BOOT, child.fileno()),
                env={},
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                pass_fds=(child.fileno(),),
                start_new_session=True,
            )
        except OSError as exc:
            parent.close()
            raise SandboxUnavailable(f"cannot start the worker launcher: {exc.strerror or exc}") from None
        finally:
            child.close()
        parent.setblocking(False)
        self._sock = parent
        return parent

    async def spawn(self, plan: Plan, cgroups: CgroupHost) -> Worker:
        """A new worker of this plan, forked by the launcher and sent its Setup."""
        cgroup_dirs = worker_cgroup(plan, cgroups)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            async with self._lock:
                pid = await self._fork(
                    child,
                    Fork(namespaces=plan.namespaces, user_namespace=plan.user_namespace, shared_net=plan.shared_net),
                )
        except BaseException:
            parent.close()
            cgroups.discard(cgroup_dirs)
            raise
        finally:
            child.close()
        return send_setup(Worker(plan.kind, pid, parent, cgroups, cgroup_dirs), plan)

    async def _fork(self, channel: socket.socket, request: Fork) -> int:
        for attempt in (1, 2):  # a launcher that died is replaced once
            sock = self._sock if self._sock is not None and self._alive() else self._restart()
            try:
                socket.send_fds(sock, [encode_frame(request)], [channel.fileno()])
                reply = await self._reply(sock)
            except (OSError, ProtocolError, EOFError) as exc:
                log.error("worker launcher failed (attempt %d): %s", attempt, exc)
                self._stop_now()
                continue
            if reply.error or reply.pid <= 0:
                raise SandboxUnavailable(f"the launcher could not fork a worker: {reply.error or 'no pid'}")
            return reply.pid
        raise SandboxUnavailable("the worker launcher keeps failing")

    async def _reply(self, sock: socket.socket) -> Forked:
        reader = from_launcher_reader()
        with anyio.fail_after(REPLY_TIMEOUT_S):
            while True:
                await anyio.wait_readable(sock)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                if not data:
                    raise EOFError("the launcher closed its socket")
                messages = reader.feed(data)
                if len(messages) > 1 or (messages and not isinstance(messages[0], Forked)):
                    raise ProtocolError("unexpected reply from the launcher")
                if messages:
                    assert isinstance(messages[0], Forked)
                    return messages[0]

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _restart(self) -> socket.socket:
        self._stop_now()
        return self._start()

    def _stop_now(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._proc.wait()
            self._proc = None

    async def close(self) -> None:
        """Close the socket (the launcher exits on EOF) and reap it; kill it if it lingers."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with anyio.move_on_after(STOP_TIMEOUT_S):
            while proc.poll() is None:
                await anyio.sleep(0.01)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def spawn_one(
    plan: Plan, cgroups: CgroupHost, stdout: int | None = subprocess.DEVNULL, stderr: int | None = subprocess.DEVNULL
) -> Worker:
    """One worker from a launcher started for it alone (`bastion sandbox run`, `doctor`):
    born and confined by exactly the code that starts the pool's workers."""
    launcher = Launcher(stderr=stderr, stdout=stdout)
    try:
        return await launcher.spawn(plan, cgroups)
    finally:
        await launcher.close()
