"""Worker entry point: confine, announce readiness, serve exactly one request.

Run in a process the launcher (workers/launcher.py) has just cloned, as PID 1
of a new pid namespace, with an empty environment. Everything the worker will
ever need was imported by the launcher before (afterwards its root is empty
and no module can be loaded); from then on it trusts nothing it reads.
Exit status: 0 served, 65 protocol error, 70 sandbox set-up failed.
"""

from __future__ import annotations

import array  # noqa: F401 - socket.recv_fds imports it lazily; the sandbox root has no stdlib
import os
import socket
import stat
import sys
import traceback  # noqa: F401 - same reason: used when a payload raises

from bastion_wire.plan import Plan, plan_from_wire
from bastion_wire.protocol import (
    PROTOCOL_VERSION,
    Failed,
    IntelRequest,
    JournalRequest,
    ProtocolError,
    Ready,
    RunRequest,
    SearchRequest,
    Setup,
    SetupFailed,
    TailRequest,
)
from workers import journal_reader
from workers.channel import Channel
from workers.confine.layer import LayerError
from workers.confine.namespaces import Birth
from workers.confine.order import confine
from workers.confine.syscalls import set_process_name
from workers.journal import search_journal
from workers.search import search
from workers.tail import tail

EXIT_PROTOCOL = 65  # sysexits.h EX_DATAERR: a frame it did not expect or could not decode
EXIT_SETUP = 70  # sysexits.h EX_SOFTWARE: a sandbox layer failed (the broker was sent SetupFailed first)
WORKER_NAME = "bastion-worker"  # what ps and psutil show (comm), also for forked workers
RUN_FD = 3  # where `bastion sandbox run --pass-fd` puts the handed-over file


def _set_up(channel: Channel, channel_fd: int, broker_pidfd: int, birth: Birth) -> Plan:
    setup, fds = channel.receive()
    if not isinstance(setup, Setup) or fds or setup.version != PROTOCOL_VERSION:
        raise ProtocolError("expected a Setup frame of this protocol version")
    plan = plan_from_wire(setup.plan)
    if plan.kind != setup.kind:
        raise ProtocolError("the plan is for another worker kind")
    if plan.kind == "intel":
        import workers.intel  # noqa: F401 - its C extension must load before the root is emptied
    if plan.kind == "journal":
        journal_reader.library()  # libsystemd and its libraries: their files are gone once confined
    layers = confine(plan, channel_fd, broker_pidfd, birth)
    channel.send(Ready(version=PROTOCOL_VERSION, layers=layers))
    return plan


def _flush_and_exit(code: int, message: str = "") -> None:
    try:
        sys.stdout.flush()
        sys.stderr.write(message)
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


def _run(request: RunRequest, fds: list[int]) -> None:
    """Become the program (or run the payload) exactly as confined. Never returns."""
    if fds and fds[0] != RUN_FD:
        os.dup2(fds[0], RUN_FD, inheritable=True)
    elif fds:
        os.set_inheritable(RUN_FD, True)
    if request.python:
        namespace = {"__name__": "__payload__", "handed_fd": RUN_FD if fds else None}
        try:
            exec(compile(request.python, "<payload>", "exec"), namespace)  # noqa: S102 - the point of sandbox run
        except SystemExit as exc:
            _flush_and_exit(exc.code if isinstance(exc.code, int) else 1)
        except BaseException as exc:  # noqa: BLE001 - report, then exit like a crashed program
            _flush_and_exit(1, f"payload raised {type(exc).__name__}: {exc}\n")
        _flush_and_exit(0)
    try:
        os.execve(request.argv[0], request.argv, {})
    except OSError as exc:
        os.write(2, f"execve {request.argv[0]}: {exc.strerror}\n".encode(errors="replace"))
        os._exit(127)


def _all_regular_files(fds: list[int]) -> bool:
    """Workers accept regular files only: a directory descriptor would reach host
    metadata through `..` (Landlock does not mediate stat), a device or socket more."""
    return all(stat.S_ISREG(os.fstat(fd).st_mode) for fd in fds)


def _serve(channel: Channel, plan: Plan) -> None:
    request, fds = channel.receive()
    if not _all_regular_files(fds):
        channel.send(Failed("bad_request", "a handed descriptor is not a regular file"))
        return
    if isinstance(request, RunRequest) and plan.allow_run:
        _run(request, fds)
    if plan.kind == "intel" and isinstance(request, IntelRequest):
        from workers.intel import lookup  # already imported before confinement

        lookup(request, fds, channel.send)
        return
    if plan.kind == "journal" and isinstance(request, JournalRequest):
        search_journal(request, fds, plan.executables, channel.send)
        return
    if plan.kind == "grep" and isinstance(request, SearchRequest) and plan.executables and fds:
        search(request, fds, plan.executables, channel.send)
        return
    if len(fds) != 1:
        raise ProtocolError("a request must carry exactly one descriptor")
    if plan.kind == "resource" and isinstance(request, TailRequest):
        tail(request, fds[0], channel.send)
    else:
        channel.send(Failed("bad_request", f"a {plan.kind} worker cannot serve this request"))


def main(channel_fd: int, broker_pidfd: int, birth: Birth) -> int:
    """Serve one worker's life on `channel_fd`; the exit status. `broker_pidfd` is the
    launcher's pidfd of the broker, `birth` the namespaces the launcher cloned it into."""
    set_process_name(WORKER_NAME)
    channel = Channel(socket.socket(fileno=channel_fd))
    try:
        return _main(channel, channel_fd, broker_pidfd, birth)
    finally:
        channel.close()


def _linger(channel: Channel) -> None:
    """After the final reply, wait for the broker to stop us: our exit (namespace and
    mount teardown) would compete with the broker sending the reply on."""
    try:
        channel.wait_closed()
    except OSError:
        pass


def _main(channel: Channel, channel_fd: int, broker_pidfd: int, birth: Birth) -> int:
    try:
        plan = _set_up(channel, channel_fd, broker_pidfd, birth)
    except LayerError as exc:
        channel.send(SetupFailed(layer=exc.layer, reason=exc.reason))
        return EXIT_SETUP
    except ProtocolError:
        return EXIT_PROTOCOL
    try:
        _serve(channel, plan)
    except (ProtocolError, BrokenPipeError, ConnectionResetError):
        return EXIT_PROTOCOL
    _linger(channel)
    return 0
