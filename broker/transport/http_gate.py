"""The front of the Streamable HTTP endpoint, between the SDK's bearer auth and its transport.

Two things the SDK's transport does not do for us:
- It answers a malformed body (a batch, a bad envelope) with pydantic's
  validation text, which names internal types and echoes the input. Each
  POST body is read here (under the size cap) and screened by
  broker/transport/jsonrpc_gate.py; a refused one gets a short JSON-RPC error and an
  audit record, and never reaches the SDK.
- On the 2025 protocol its handlers run in the session's task, away from the
  POST that carried the request, so a client that drops its connection does
  not stop the call. This app is the only reader of the ASGI `receive`
  channel: once the body is in, it waits for `http.disconnect` and marks the
  request's Peer gone, which broker/transport/request_guard.py turns into a cancelled
  call.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.calls import Bastion
from broker.transport.http_auth import http_client_name
from broker.transport.jsonrpc_gate import MAX_MESSAGE_BYTES, Refusal, error_line, screen
from broker.transport.peer import METHOD_KEY, SCOPE_KEY, Peer
from broker.transport.request_guard import record_refusal

TOO_LARGE = Refusal(types.INVALID_REQUEST, f"invalid request: a message may have at most {MAX_MESSAGE_BYTES} bytes")


class GatedEndpoint:
    def __init__(self, app: ASGIApp, bastion: Bastion) -> None:
        self.app = app
        self.bastion = bastion

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)  # GET (event stream) and DELETE carry no message
            return
        body = await _read_body(scope, receive)
        if body is None:
            return  # the client left before its request was complete: there is no request
        if isinstance(body, Refusal):  # TOO_LARGE
            await self._refuse(send, body)
            return
        verdict = screen(body)
        if isinstance(verdict, Refusal):
            await self._refuse(send, verdict)
            return
        peer = Peer()
        scope[SCOPE_KEY] = peer
        scope[METHOD_KEY] = verdict.method if isinstance(verdict, types.JSONRPCRequest) else None
        async with anyio.create_task_group() as group:
            group.start_soon(_watch, receive, peer)
            await self.app(scope, _replay(body, peer), send)
            group.cancel_scope.cancel()

    async def _refuse(self, send: Send, refusal: Refusal) -> None:
        await record_refusal(self.bastion, refusal, http_client_name())
        await answer(send, 413 if refusal is TOO_LARGE else 400, error_line(refusal))


async def _read_body(scope: Scope, receive: Receive) -> bytes | Refusal | None:
    """The whole body; TOO_LARGE past the cap (not read further); None if the client left."""
    declared = dict(scope.get("headers") or []).get(b"content-length", b"")
    if declared.isdigit() and int(declared) > MAX_MESSAGE_BYTES:
        return TOO_LARGE
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > MAX_MESSAGE_BYTES:
            return TOO_LARGE
        if not message.get("more_body", False):
            return bytes(body)


def _replay(body: bytes, peer: Peer) -> Receive:
    """`receive` for the SDK: the body in one message, then `http.disconnect` once the client is gone."""
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await peer.gone.wait()
        return {"type": "http.disconnect"}

    return receive


async def _watch(receive: Receive, peer: Peer) -> None:
    # After a complete body the server sends nothing but http.disconnect (on FIN, RST, or
    # once the response is complete); anything else is skipped.
    while (await receive())["type"] != "http.disconnect":
        pass
    peer.gone.set()


async def answer(send: Send, status: int, body: bytes) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
