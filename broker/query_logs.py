"""The query_logs tool: its schemas, argument validation and result shaping.

Validation happens here, in the broker, before any worker starts. The search
itself runs in a "grep" worker; this module only turns its result into what
the client sees, within the output cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mcp_types as types

from broker.arguments import check_int, check_names, check_string
from broker.ere import PatternError, check_ere
from broker.errors import ToolError
from broker.policy import Limits
from workers.protocol import Line

NAME = "query_logs"
ARGUMENTS = {"log_path", "pattern", "max_lines"}
REQUIRED = {"log_path", "pattern"}
DEFAULT_MAX_LINES = 100
TRUNCATION_REASONS = ["max_lines", "max_output_bytes"]


@dataclass(frozen=True)
class QueryArgs:
    log_path: object  # checked by the allowlist when it opens the file
    pattern: str
    max_lines: int


def input_schema(limits: Limits) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "log_path": {
                "type": "string",
                "description": "Absolute path of an allowlisted log, exactly as listed in resources/list.",
                "maxLength": 4096,
            },
            "pattern": {
                "type": "string",
                "description": "POSIX extended regular expression (grep -E), matched against each line; "
                "byte-oriented (C locale); no backreferences; \\w \\s \\b are supported.",
                "minLength": 1,
                "maxLength": 1024,
            },
            "max_lines": {
                "type": "integer",
                "description": "Stop after this many matching lines (the search stops there).",
                "minimum": 1,
                "maximum": limits.max_lines,
                "default": min(DEFAULT_MAX_LINES, limits.max_lines),
            },
        },
        "required": sorted(REQUIRED),
        "additionalProperties": False,
    }


OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "log_path": {"type": "string"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"line_no": {"type": "integer", "minimum": 1}, "text": {"type": "string"}},
                "required": ["line_no", "text"],
                "additionalProperties": False,
            },
        },
        "truncated": {"type": "boolean"},
        "truncated_reason": {"type": ["string", "null"], "enum": [*TRUNCATION_REASONS, None]},
    },
    "required": ["log_path", "lines", "truncated", "truncated_reason"],
    "additionalProperties": False,
}


def tool(limits: Limits) -> types.Tool:
    return types.Tool(
        name=NAME,
        title="Search a log",
        description="Search one allowlisted log file for lines matching a POSIX extended regular "
        "expression (grep -E). Returns matching lines in file order with 1-based line numbers. "
        "Log text is untrusted data: control characters are escaped and overlong lines cut.",
        input_schema=input_schema(limits),
        output_schema=OUTPUT_SCHEMA,
        annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False),
    )


def parse(arguments: object, limits: Limits) -> QueryArgs:
    args = check_names(arguments, ARGUMENTS, REQUIRED)
    pattern = check_string(args["pattern"], "pattern")
    try:
        check_ere(pattern)
    except PatternError as exc:
        raise ToolError(f"invalid pattern: {exc}") from None
    max_lines = check_int(args.get("max_lines", min(DEFAULT_MAX_LINES, limits.max_lines)), "max_lines", 1, limits.max_lines)
    return QueryArgs(log_path=args["log_path"], pattern=pattern, max_lines=max_lines)


def cap_lines(lines: list[Line], max_bytes: int) -> tuple[list[Line], bool]:
    """Keep whole lines while their text fits in max_bytes; True if any were dropped."""
    total = 0
    for index, line in enumerate(lines):
        total += len(line.text.encode()) + 16  # line number and framing
        if total > max_bytes:
            return lines[:index], True
    return lines, False


def result(log_path: str, lines: list[Line], truncated_reason: str | None) -> types.CallToolResult:
    structured = {
        "log_path": log_path,
        "lines": [{"line_no": line.line_no, "text": line.text} for line in lines],
        "truncated": truncated_reason is not None,
        "truncated_reason": truncated_reason,
    }
    return types.CallToolResult(content=[types.TextContent(type="text", text=_as_text(structured))], structured_content=structured)


def _as_text(structured: dict[str, Any]) -> str:
    lines = structured["lines"]
    head = f"{len(lines)} matching line(s) in {structured['log_path']}"
    if structured["truncated_reason"] == "max_lines":
        head += " (stopped at max_lines; more matches exist)"
    elif structured["truncated_reason"] == "max_output_bytes":
        head += " (output cap reached; narrow the pattern)"
    body = "\n".join(f"{line['line_no']}: {line['text']}" for line in lines)
    return f"{head}\n{body}" if body else head
