"""JSON Schema pieces that every tool's schemas share.

A field that may be null is written as `anyOf: [schema, {"type": "null"}]`, never as a
type array (`"type": ["integer", "null"]`): both mean the same in JSON Schema, but strict
clients (the MCP Inspector's --strict, some hosts' schema converters) accept only one type
per schema. tests/test_tool_schemas.py walks every tool's schemas for a type array.
"""

from __future__ import annotations

from typing import Any

NULL: dict[str, Any] = {"type": "null"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or null."""
    return {"anyOf": [schema, NULL]}
