"""The launcher: a small pre-imported process that forks new workers on request.

Starting a worker as a fresh interpreter costs ~50 ms of CPU, nearly all of it
imports; on a 2-core host that start-up competed with the calls themselves.
The broker therefore starts this process once (`python -I -S`, empty
environment, the same way it starts a worker) and asks it for each new worker.
The launcher has imported everything a worker needs, and forks:

  broker --Fork + socket fd--> launcher --clone(CLONE_PARENT)--> worker
  broker <--Forked(pid)------- launcher

CLONE_PARENT makes the worker the broker's child, not the launcher's, so the
broker waits for it, reads its rusage and holds its pidfd exactly as for a
worker it started itself. The new worker then runs workers.main: it reads its
Setup from the broker and confines itself (own session, closed descriptors,
cgroup, namespaces, ... seccomp) before it reads anything untrusted. Nothing
of the launcher is shared with it but memory the launcher wrote before any
request: module code and constants; no client input ever reaches the launcher.

The launcher takes the parent-death signal, so it dies with the broker, and
exits when the broker closes its socket. Exit status 0 on EOF, 65 on a frame
it does not understand, 70 if it cannot take the parent-death signal.
"""

from __future__ import annotations

import os
import socket
import sys

import workers.intel  # noqa: F401 - imported once here, so no intel worker pays for it
from bastion_wire.protocol import Fork, Forked, ProtocolError, encode_frame, to_launcher_reader
from workers.confine import session, syscalls
from workers.confine.layer import LayerError
from workers.main import EXIT_PROTOCOL, WORKER_NAME, main

LAUNCHER_NAME = "bastion-launch"
# sysexits.h EX_SOFTWARE, an internal error: the launcher could not take the parent-death
# signal, or a worker it forked raised instead of returning a status. The broker never reads
# the launcher's status (a launcher found dead is replaced) and records a worker's as its
# exit_code, whatever the number.
EXIT_SOFTWARE = 70


def _serve(control: socket.socket, broker_pid: int) -> int:
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
                or not all(isinstance(m, Fork) for m in messages)
            ):
                raise ProtocolError("expected one Fork frame with one descriptor")
        except ProtocolError:
            return EXIT_PROTOCOL
        if messages:
            control.sendall(encode_frame(_fork(fds[0], control, broker_pid)))
        elif fds:
            return EXIT_PROTOCOL  # a descriptor without its frame


def _fork(channel_fd: int, control: socket.socket, broker_pid: int) -> Forked:
    try:
        pid = syscalls.fork_as_sibling()
    except OSError as exc:
        os.close(channel_fd)
        return Forked(error=f"clone: {exc.strerror}")
    if pid == 0:
        _become_worker(channel_fd, control, broker_pid)
    os.close(channel_fd)
    return Forked(pid=pid)


def _become_worker(channel_fd: int, control: socket.socket, broker_pid: int) -> None:
    """In the new process: a session of its own, then the ordinary worker. Never returns."""
    code = EXIT_SOFTWARE
    try:
        syscalls.set_process_name(WORKER_NAME)  # until now it carried the launcher's name
        control.detach()  # fd_hygiene closes it; the object must not close it again
        os.setsid()
        code = main([str(channel_fd), str(broker_pid)])
    finally:
        sys.stderr.flush()
        os._exit(code)


def run(argv: list[str]) -> None:
    control_fd, broker_pid = int(argv[0]), int(argv[1])
    syscalls.set_process_name(LAUNCHER_NAME)
    try:
        session.die_with_parent(broker_pid)
    except LayerError:
        os._exit(EXIT_SOFTWARE)
    control = socket.socket(fileno=control_fd)
    code = _serve(control, broker_pid)
    control.close()
    os._exit(code)
