"""MCP over stdio: every line screened, every request answered, a vanished client a stop.

In place of the SDK's stdio_server, for three reasons:
- The SDK drops a line it cannot parse without an answer (pydantic gives up
  at 200 levels of nesting, so a deep tools/call got no response and no audit
  record). Each line is screened by broker/transport/jsonrpc_gate.py first; a refused
  one is audited and answered with a short JSON-RPC error.
- A write to a client that has gone raised BrokenPipeError out of the SDK's
  writer, which the CLI took for a start-up failure ("refusing to serve",
  exit 3) and no server_stop was written. Here a broken pipe ends serving
  like a closed stdin does: calls in flight are cancelled, then the CLI
  records server_stop with reason "client gone" and exits 0.
- Nobody may be reading any more while stdin stays open (a client that
  closed its end of our stdout, or died with a grandchild holding our
  stdin). The write end of a pipe reports EPOLLERR once its last reader has
  closed, so that is watched too: the stop does not wait for the next write.

Writes never block the event loop: a pipe or socket is written non-blocking,
one whole line at a time under a lock (refusals written here and the SDK's
answers never interleave).
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import stat
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.shared.message import SessionMessage

from broker.transport.jsonrpc_gate import MAX_MESSAGE_BYTES, Refusal, error_line, screen
from broker.transport.stdin_lines import StdinLines

log = logging.getLogger("bastion.stdio")
CLIENT_GONE = "client gone"
STDIN_CLOSED = "stdin closed"

OnRefusal = Callable[[Refusal], Awaitable[None]]


class Wire:
    """The client's end of our stdout (a private duplicate: fd 1 itself is pointed at stderr,
    so that nothing printed by mistake can corrupt the stream)."""

    def __init__(self, fd: int = 1) -> None:
        self.fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        try:
            os.dup2(2, fd)
        except OSError:  # no stderr either
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        mode = os.fstat(self.fd).st_mode
        self._pollable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        if self._pollable:
            os.set_blocking(self.fd, False)
        self.gone = anyio.Event()
        self._lock = anyio.Lock()

    async def write_line(self, line: bytes) -> None:
        async with self._lock:
            view = memoryview(line)
            while view and not self.gone.is_set():
                try:
                    view = view[os.write(self.fd, view) :]
                except BlockingIOError:
                    await anyio.wait_writable(self.fd)
                except (BrokenPipeError, ConnectionResetError):
                    log.info("the client stopped reading (broken pipe)")
                    self.gone.set()

    def reader_gone(self) -> bool:
        """True once the pipe or socket has no reader (a poll with no events asked for
        still reports POLLERR/POLLHUP)."""
        if not self._pollable:
            return False
        poller = select.poll()
        poller.register(self.fd, 0)
        return bool(poller.poll(0))

    async def watch(self) -> None:
        """Set `gone` once nobody can read what we write."""
        if not self._pollable:
            return
        with select.epoll() as watcher:
            watcher.register(self.fd, 0)  # only EPOLLERR/EPOLLHUP, which epoll always reports
            while not watcher.poll(0):
                await anyio.wait_readable(watcher.fileno())  # an epoll fd is readable when it has events
        log.info("the client closed its end of our stdout")
        self.gone.set()

    def close(self) -> None:
        os.close(self.fd)


async def serve(server: Server, on_refusal: OnRefusal) -> str:
    """Serve one client on stdin/stdout until it closes stdin or goes away; say which."""
    wire = Wire()
    try:
        async with anyio.create_task_group() as group:
            to_server, from_client = anyio.create_memory_object_stream[SessionMessage | Exception](0)
            to_client, from_server = anyio.create_memory_object_stream[SessionMessage](0)
            group.start_soon(_read, to_server, wire, on_refusal)
            group.start_soon(_write, from_server, wire)  # drains (and drops) answers until the end
            with anyio.CancelScope() as serving:
                group.start_soon(_stop_when_gone, wire, serving)
                await server.run(from_client, to_client, server.create_initialization_options())
            group.cancel_scope.cancel()  # stdin closed or the client is gone, and every call has ended
        return CLIENT_GONE if wire.gone.is_set() or wire.reader_gone() else STDIN_CLOSED
    finally:
        wire.close()


async def _stop_when_gone(wire: Wire, scope: anyio.CancelScope) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(wire.watch)
        await wire.gone.wait()
        group.cancel_scope.cancel()
    scope.cancel()  # cancels every call in flight: each kills its worker and records its end


async def _read(
    to_server: anyio.abc.ObjectSendStream[SessionMessage | Exception], wire: Wire, on_refusal: OnRefusal
) -> None:
    async with to_server:
        async for line in StdinLines(0, MAX_MESSAGE_BYTES):
            if not line.strip():
                continue
            verdict = screen(line)
            if isinstance(verdict, Refusal):
                await on_refusal(verdict)
                await wire.write_line(error_line(verdict))
                continue
            try:
                await to_server.send(SessionMessage(verdict))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the server stopped reading (the client is gone): nothing more to hand on


async def _write(from_server: anyio.abc.ObjectReceiveStream[SessionMessage], wire: Wire) -> None:
    async with from_server:
        async for message in from_server:
            await wire.write_line(_dump(message.message))


def _dump(message: types.JSONRPCMessage) -> bytes:
    try:
        return message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
    except Exception:  # noqa: BLE001 - one unserialisable answer must not end the session
        log.exception("cannot serialise an answer")
        request_id = getattr(message, "id", None)
        return error_line(Refusal(types.INTERNAL_ERROR, "internal error: the answer could not be encoded", request_id))
