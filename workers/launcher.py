"""The launcher: a small pre-imported process that forks new workers on request.

Starting a worker as a fresh interpreter costs ~50 ms of CPU, nearly all of it
imports; on a 2-core host that start-up competed with the calls themselves.
The broker therefore starts this process once (`python -I -S`, empty
environment, the same way it starts a worker) and asks it for each new worker.
The launcher has imported everything a worker needs, and forks:

  broker --Fork + socket fd--> launcher --clone(CLONE_PARENT|CLONE_NEWPID)--> worker
  broker <--Forked(pid)------- launcher

CLONE_PARENT makes the worker the broker's child, not the launcher's, so the
broker waits for it, reads its rusage and holds its pidfd exactly as for a
worker it started itself; the Fork frame's namespaces decide the clone's
namespace flags (workers/confine/namespaces.py birth_flags), so the worker is
born PID 1 of its own pid namespace. If this host refuses those namespaces,
the worker is cloned without them and told why: its namespaces layer then
fails (or, best-effort, is skipped) like any other layer. The new worker runs
workers.main: it reads its Setup from the broker and confines itself (own
session, closed descriptors, cgroup, namespaces, ... seccomp) before it reads
anything untrusted. Nothing of the launcher is shared with it but memory the
launcher wrote before any request: module code and constants, the broker's
pidfd; no client input ever reaches the launcher.

The launcher takes the parent-death signal, so it dies with the broker, and
exits when the broker closes its socket. Exit status 0 on EOF, 65 on a frame
it does not understand, 70 if it cannot take the parent-death signal.
"""

from __future__ import annotations

import gc
import os
import socket
import sys

import workers.intel  # noqa: F401 - imported once here, so no intel worker pays for it
from bastion_wire.protocol import Fork, Forked, ProtocolError, encode_frame, to_launcher_reader
from workers.confine import namespaces, session, syscalls
from workers.confine.layer import LayerError
from workers.main import EXIT_PROTOCOL, WORKER_NAME, main

LAUNCHER_NAME = "bastion-launch"
# sysexits.h EX_SOFTWARE, an internal error: the launcher could not take the parent-death
# signal, or a worker it forked raised instead of returning a status. The broker never reads
# the launcher's status (a launcher found dead is replaced) and records a worker's as its
# exit_code, whatever the number.
EXIT_SOFTWARE = 70


def _serve(control: socket.socket, broker_pidfd: int) -> int:
    reader = to_launcher_reader()
    while True:
        data, fds, flags, _ = socket.recv_fds(control, 4096, 1)
        if not data:
            return 0
        try:
            messages = reader.feed(data)
            if (
                flags & socket.MSG_CTRUNC
                or len(messages) > 1
                or len(fds) != len(messages)
                or not all(isinstance(m, Fork) and set(m.namespaces) <= namespaces.FLAGS.keys() for m in messages)
            ):
                raise ProtocolError("expected one Fork frame with one descriptor")
        except ProtocolError:
            return EXIT_PROTOCOL
        if messages:
            assert isinstance(messages[0], Fork)
            control.sendall(encode_frame(_fork(messages[0], fds[0], control, broker_pidfd)))
        elif fds:
            return EXIT_PROTOCOL  # a descriptor without its frame


def _fork(request: Fork, channel_fd: int, control: socket.socket, broker_pidfd: int) -> Forked:
    flags = namespaces.birth_flags(request.namespaces, request.user_namespace)
    shared = _SHARED_NET.enter() if request.shared_net else namespaces.SharedNet()
    # Everything the worker inherits goes to the collector's permanent generation (O(1)): a
    # collection in the worker then never walks, and so never writes to, the launcher's pages.
    gc.freeze()
    try:
        pid, birth = _clone(flags, shared)
    except OSError as exc:
        os.close(channel_fd)
        return Forked(error=f"clone: {exc.strerror}")
    if pid == 0:
        _become_worker(channel_fd, control, broker_pidfd, birth)
    os.close(channel_fd)
    return Forked(pid=pid)


def _clone(flags: int, shared: namespaces.SharedNet) -> tuple[int, namespaces.Birth]:
    """Clone into the namespaces; where the host refuses them, clone without and say why."""
    try:
        return syscalls.fork_as_sibling(flags), namespaces.Birth(flags, shared_net=shared)
    except OSError as exc:
        if not flags or exc.errno not in namespaces.UNSUPPORTED:
            raise
        reason = f"clone({namespaces.describe(flags)}): {exc.strerror}"
    return syscalls.fork_as_sibling(), namespaces.Birth(0, reason, shared)


class _LauncherNet:
    """The launcher's own network namespace, made empty on the first worker that shares it.

    The launcher needs no network (it talks to the broker over an inherited socket pair),
    so it moves itself, once, into a new network namespace; workers cloned without
    CLONE_NEWNET are then born in it. Nothing else ever enters it, and no worker can make a
    socket (broker/sandbox/profile.py refuses a sharing profile otherwise), so it stays as
    the kernel made it: a loopback interface that is down."""

    def __init__(self) -> None:
        self._state: namespaces.SharedNet | None = None

    def enter(self) -> namespaces.SharedNet:
        if self._state is None:
            host = namespaces.net_inode()
            try:
                syscalls.unshare(syscalls.CLONE_NEWNET)
                self._state = namespaces.SharedNet(host=host, shared=namespaces.net_inode())
            except OSError as exc:
                self._state = namespaces.SharedNet(host=host, error=f"unshare(net): {exc.strerror}")
        return self._state


_SHARED_NET = _LauncherNet()


def _become_worker(channel_fd: int, control: socket.socket, broker_pidfd: int, birth: namespaces.Birth) -> None:
    """In the new process: a session of its own, then the ordinary worker. Never returns."""
    code = EXIT_SOFTWARE
    try:
        syscalls.set_process_name(WORKER_NAME)  # until now it carried the launcher's name
        control.detach()  # fd_hygiene closes it; the object must not close it again
        os.setsid()
        code = main(channel_fd, broker_pidfd, birth)
    finally:
        sys.stderr.flush()
        os._exit(code)


def run(argv: list[str]) -> None:
    control_fd, broker_pid = int(argv[0]), int(argv[1])
    syscalls.set_process_name(LAUNCHER_NAME)
    try:
        session.die_with_parent(broker_pid)
        broker_pidfd = session.open_broker_pidfd(broker_pid)
    except LayerError:
        os._exit(EXIT_SOFTWARE)
    control = socket.socket(fileno=control_fd)
    code = _serve(control, broker_pidfd)
    control.close()
    os._exit(code)
