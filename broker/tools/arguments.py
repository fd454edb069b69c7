"""Checks shared by every tool's argument validation.

The MCP SDK's low-level server does not enforce inputSchema, so every
argument is checked here, by type and range, and unknown ones are refused.
Messages name the argument and the rule, never echo huge values.
"""

from __future__ import annotations

from typing import Any

from broker.errors import ToolError

MAX_NAME_ECHO = 40


def check_names(arguments: object, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ToolError("arguments must be an object")
    unknown = sorted(str(name)[:MAX_NAME_ECHO] for name in arguments if name not in allowed)
    if unknown:
        listed = ", ".join(repr(name) for name in unknown[:5])
        raise ToolError(f"unknown argument(s): {listed}; accepted: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(arguments))
    if missing:
        raise ToolError(f"missing required argument(s): {', '.join(missing)}")
    return arguments


def check_int(value: object, name: str, low: int, high: int) -> int:
    # bool is a subclass of int in Python; true/false is not a count.
    if type(value) is not int:
        raise ToolError(f"{name} must be an integer between {low} and {high}")
    if not low <= value <= high:
        raise ToolError(f"{name} must be between {low} and {high}")
    return value


def check_string(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ToolError(f"{name} must be a non-empty string")
    return value


def check_bool(value: object, name: str) -> bool:
    if type(value) is not bool:
        raise ToolError(f"{name} must be true or false")
    return value
