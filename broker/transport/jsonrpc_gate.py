"""Screening of every inbound JSON-RPC message before the MCP SDK parses it.

The SDK's parsers have limits of their own and fail badly at them: pydantic's
JSON parser gives up at 200 levels of nesting and the stdio transport then
drops the message without an answer, while the HTTP transport answers invalid
messages with pydantic's text (internal type names, the echoed input). So
each message is checked here first, in one linear pass and within fixed
bounds: size, UTF-8, JSON syntax, nesting depth and the JSON-RPC 2.0 envelope.
What passes is handed to the SDK unchanged; what fails gets a short, fixed
JSON-RPC error that names the rule and never echoes the input, and the
refusal is audited by the caller (Bastion.refuse).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import mcp_types as types
import pydantic_core
from pydantic import ValidationError

MAX_MESSAGE_BYTES = 4 << 20  # the SDK's own HTTP body limit; stdio lines get the same
MAX_DEPTH = 32  # objects and arrays, the message itself counting as 1; tool arguments need 1 or 2
MAX_ID_CHARS = 256  # an id is echoed in the answer: it must not amplify
MAX_METHOD_CHARS = 256
CUT = "[TOO DEEP]"

# A JSON string (escapes included) or a bracket: strings are skipped whole, so
# a bracket inside one is never counted.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{}]', re.DOTALL)


@dataclass(frozen=True)
class Refusal:
    """A message that must not reach the SDK, and what the client is told."""

    code: int
    message: str
    id: str | int | None = None  # the request's id when it could be read, else null
    method: str | None = None
    params: Any = None  # cut to MAX_DEPTH: for the audit record


def screen(data: bytes) -> Refusal | types.JSONRPCMessage:
    """The message, validated as the SDK validates it, if `data` is one well-formed JSON-RPC 2.0
    message within the limits; else why not."""
    if len(data) > MAX_MESSAGE_BYTES:
        return Refusal(types.INVALID_REQUEST, f"invalid request: a message may have at most {MAX_MESSAGE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(types.PARSE_ERROR, "parse error: a message must be UTF-8 encoded JSON")
    bounded, too_deep = _cut_deep(text)
    try:
        # The SDK's own parser (what it rejects, such as a lone surrogate, is rejected here);
        # nothing it parses now nests deeper than its recursion limit.
        message = pydantic_core.from_json(bounded, allow_inf_nan=False)
    except ValueError:
        return Refusal(types.PARSE_ERROR, "parse error: a message must be one valid JSON value")
    refusal = _check_envelope(message)
    if refusal is not None:
        return refusal
    if too_deep:
        return Refusal(
            types.INVALID_PARAMS,
            f"invalid params: a message may nest at most {MAX_DEPTH} levels of objects and arrays",
            message.get("id"),
            message.get("method"),
            message.get("params"),
        )
    try:
        return types.jsonrpc_message_adapter.validate_python(message, by_name=False)
    except ValidationError:  # its text names internal types and echoes the input: not for the client
        return Refusal(
            types.INVALID_REQUEST,
            "invalid request: not a JSON-RPC 2.0 request, notification or response",
            message.get("id"),
            message.get("method"),
            message.get("params"),
        )


def error_line(refusal: Refusal) -> bytes:
    """The JSON-RPC error for a refusal, on one line."""
    body = {"jsonrpc": "2.0", "id": refusal.id, "error": {"code": refusal.code, "message": refusal.message}}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def _cut_deep(text: str) -> tuple[str, bool]:
    """`text` with every value nested deeper than MAX_DEPTH replaced by CUT (if it was valid JSON,
    the result still is, and can be parsed without recursing deeper than MAX_DEPTH + 1)."""
    pieces: list[str] = []
    depth = 0
    kept_until = 0  # text[kept_until:] has not been copied yet
    cut_from: int | None = None  # where the value being dropped began
    for token in _TOKEN.finditer(text):
        bracket = token[0]
        if bracket in "[{":
            depth += 1
            if depth == MAX_DEPTH + 1 and cut_from is None:
                cut_from = token.start()
        elif bracket in "]}":
            depth -= 1
            if depth == MAX_DEPTH and cut_from is not None:
                pieces += [text[kept_until:cut_from], json.dumps(CUT)]
                kept_until, cut_from = token.end(), None
    if cut_from is not None:  # never closed: not JSON, and what is kept shows it
        return "".join(pieces) + text[kept_until:cut_from], True
    return ("".join(pieces) + text[kept_until:], True) if pieces else (text, False)


def _check_envelope(message: object) -> Refusal | None:
    if isinstance(message, list):
        return Refusal(
            types.INVALID_REQUEST,
            "invalid request: batches (JSON arrays) are not supported; send one message at a time",
        )
    if not isinstance(message, dict):
        return Refusal(types.INVALID_REQUEST, "invalid request: a message must be a JSON-RPC 2.0 object")
    request_id = message.get("id")
    if "id" in message and not _valid_id(request_id):
        return Refusal(
            types.INVALID_REQUEST,
            f"invalid request: id must be a string of at most {MAX_ID_CHARS} characters or an integer",
        )
    answer_id = request_id if "id" in message else None
    if message.get("jsonrpc") != "2.0":
        return Refusal(types.INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"', answer_id)
    if "method" in message:
        method = message["method"]
        if not isinstance(method, str) or not method or len(method) > MAX_METHOD_CHARS:
            return Refusal(
                types.INVALID_REQUEST,
                f"invalid request: method must be a string of 1 to {MAX_METHOD_CHARS} characters",
                answer_id,
            )
        if "params" in message and not isinstance(message["params"], dict):
            return Refusal(types.INVALID_REQUEST, "invalid request: params must be an object", answer_id, method)
        return None
    return _check_response(message, answer_id)


def _check_response(message: dict[str, Any], answer_id: str | int | None) -> Refusal | None:
    """A client's answer to a server request: an id and exactly one of result or error."""
    if ("result" in message) == ("error" in message) or "id" not in message:
        return Refusal(
            types.INVALID_REQUEST,
            "invalid request: a message needs a method (a request or notification), "
            "or an id with a result or an error (a response)",
            answer_id,
        )
    if "result" in message and not isinstance(message["result"], dict):
        return Refusal(types.INVALID_REQUEST, "invalid request: result must be an object", answer_id)
    error = message.get("error", {"code": 0, "message": ""})
    if not isinstance(error, dict) or type(error.get("code")) is not int or not isinstance(error.get("message"), str):
        return Refusal(
            types.INVALID_REQUEST,
            "invalid request: error must be an object with an integer code and a string message",
            answer_id,
        )
    return None


def _valid_id(value: object) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    return type(value) is int and -(2**63) <= value < 2**63
