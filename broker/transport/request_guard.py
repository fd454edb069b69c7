"""What happens to every request between the SDK and the handlers (a Server middleware).

- A tool call, prompt, resource read or completion whose params the SDK refuses (a
  tools/call whose name is not a string, ...) never reaches its handler, and
  so would leave no audit record: it is recorded here as a refused call.
- Whatever a handler raises that is not an MCPError is answered with a
  generic internal error: the SDK would otherwise send str(exception).
- Over HTTP, a call whose client has disconnected is cancelled (its worker is
  killed and its end record says cancelled): its result could reach nobody.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from broker.calls import Bastion
from broker.transport.http_auth import http_client_name
from broker.transport.jsonrpc_gate import Refusal
from broker.transport.peer import peer_of

log = logging.getLogger("bastion.requests")
BAD_PARAMS = "invalid params: see the method's parameters in the MCP specification"
INTERNAL = "internal error"
GONE = "the client disconnected before the result was ready"


def audited_call(method: str | None, params: Any) -> tuple[str, dict[str, Any]] | None:
    """(tool, arguments) as the handlers name a request in the audit log; None if it is not audited."""
    params = params if isinstance(params, dict) else {}
    if method == "tools/call":
        name = params.get("name")
        return (name[:64] if isinstance(name, str) else "tools/call"), params.get("arguments") or {}
    if method == "prompts/get":
        return "prompts/get", {"name": params.get("name"), "arguments": params.get("arguments") or {}}
    if method == "resources/read":
        return "resources/read", {"uri": params.get("uri")}
    if method == "completion/complete":
        return "completion/complete", {"ref": params.get("ref"), "argument": params.get("argument")}
    return None


async def record_refusal(bastion: Bastion, refusal: Refusal, client: str | None) -> None:
    """Audit a message the transport refused (jsonrpc_gate): every refusal leaves a record."""
    call = audited_call(refusal.method, refusal.params)
    if call is not None and refusal.id is not None:
        await bastion.refuse(*call, client, refusal.message)
    else:
        bastion.reject(refusal.method[:64] if refusal.method else None, client, refusal.message)


class RequestGuard(ServerMiddleware[Any]):
    def __init__(self, bastion: Bastion) -> None:
        self.bastion = bastion

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None:  # a notification: nothing to answer
            return await call_next(ctx)
        try:
            return await self._call_while_connected(ctx, call_next)
        except ValidationError:  # the SDK's params validation, before any handler ran
            call = audited_call(ctx.method, ctx.params)
            if call is not None:
                await self.bastion.refuse(*call, http_client_name(), BAD_PARAMS)
            raise MCPError(code=types.INVALID_PARAMS, message=BAD_PARAMS) from None
        except MCPError:
            raise
        except Exception:  # noqa: BLE001 - the client must never see internals
            log.exception("%s failed", ctx.method[:64])
            raise MCPError(code=types.INTERNAL_ERROR, message=INTERNAL) from None

    async def _call_while_connected(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        peer = peer_of(ctx.request)
        if peer is None:  # stdio: a vanished client stops the whole server (broker/transport/stdio.py)
            return await call_next(ctx)
        outcome: list[HandlerResult] = []
        failure: list[Exception] = []
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                await peer.gone.wait()
                group.cancel_scope.cancel()

            group.start_soon(watch)
            try:
                outcome.append(await call_next(ctx))
            except Exception as exc:  # re-raised below, not wrapped in an exception group
                failure.append(exc)
            group.cancel_scope.cancel()
        if failure:
            raise failure[0]
        if not outcome:
            log.info("%s cancelled: the HTTP client disconnected", ctx.method[:64])
            raise MCPError(code=types.INTERNAL_ERROR, message=GONE)
        return outcome[0]
