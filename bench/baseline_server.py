"""The naive MCP server Bastion replaces: one process, no sandbox, no audit.

It is the yardstick of bench/run.py, written the obvious way with the same
SDK's low-level server over stdio:

- query_logs runs `grep -E -n -e PATTERN FILE`, reads ALL of its output into
  memory, decodes it, splits it into lines and only then keeps max_lines
  (its result has Bastion's structured shape and declares it as outputSchema);
- check_ip_reputation parses the whole netset feed into a set of networks on
  every call and checks the address against it.

Validation is minimal on purpose (a path allowlist by string equality).
Usage: python bench/baseline_server.py --log PATH [--log PATH ...] [--feed NETSET]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "log_path": {"type": "string"},
        "pattern": {"type": "string"},
        "max_lines": {"type": "integer", "minimum": 1, "default": 100},
    },
    "required": ["log_path", "pattern"],
}
# The same result shape as Bastion's query_logs. Declaring it makes an SDK client
# validate the baseline's results as it validates Bastion's, so the client-side
# cost of a call is the same on both sides of the comparison.
_LINE = {
    "type": "object",
    "properties": {
        "file": {"type": "string"},
        "line_no": {"type": "integer", "minimum": 1},
        "text": {"type": "string"},
        "context": {"type": "boolean"},
    },
    "required": ["file", "line_no", "text", "context"],
}
_FILE = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "compressed": {"type": "boolean"},
        "matches": {"type": ["integer", "null"]},
    },
    "required": ["path", "compressed", "matches"],
}
RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "log_path": {"type": "string"},
        "lines": {"type": "array", "items": _LINE},
        "files": {"type": "array", "items": _FILE},
        "total_matches": {"type": ["integer", "null"]},
        "truncated": {"type": "boolean"},
        "truncated_reason": {"type": ["string", "null"]},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["log_path", "lines", "files", "total_matches", "truncated", "truncated_reason", "notes"],
}
IP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ip_address": {"type": "string"}},
    "required": ["ip_address"],
}


class BaselineError(Exception):
    """A refusal or failure shown to the client as an error result."""


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def ok_result(text: str, structured: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=structured)


async def run_grep(pattern: str, path: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        "grep",
        "-E",
        "-n",
        "-e",
        pattern,
        path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await process.communicate()
    if process.returncode not in (0, 1):
        raise BaselineError(f"grep failed: {errors.decode(errors='replace').strip()}")
    return output


def numbered(line: str, path: str) -> dict[str, Any]:
    number, _, text = line.partition(":")
    return {"file": path, "line_no": int(number), "text": text, "context": False}


async def query_logs(arguments: dict[str, Any], allowed: set[str]) -> types.CallToolResult:
    path, pattern = str(arguments.get("log_path", "")), str(arguments.get("pattern", ""))
    max_lines = int(arguments.get("max_lines", 100))
    if path not in allowed:
        raise BaselineError("log_path is not allowlisted")
    if not pattern or max_lines < 1:
        raise BaselineError("pattern must be non-empty and max_lines at least 1")
    found = (await run_grep(pattern, path)).decode("utf-8", errors="replace").splitlines()
    lines = [numbered(line, path) for line in found[:max_lines]]
    more = len(found) > max_lines
    structured = {
        "log_path": path,
        "lines": lines,
        "files": [{"path": path, "compressed": False, "matches": None}],
        "total_matches": None,
        "truncated": more,
        "truncated_reason": "max_lines" if more else None,
        "notes": [],
    }
    body = "\n".join(f"{line['line_no']}: {line['text']}" for line in lines)
    return ok_result(f"{len(lines)} matching line(s) in {path}\n{body}", structured)


def load_feed(path: str) -> set[Network]:
    networks: set[Network] = set()
    with open(path, encoding="utf-8", errors="replace") as feed:
        for raw in feed:
            value = raw.split("#", 1)[0].split(";", 1)[0].strip()
            if not value:
                continue
            try:
                networks.add(ipaddress.ip_network(value))
            except ValueError:
                continue
    return networks


def listed_in(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: set[Network]) -> list[str]:
    found = []
    for prefix in range(address.max_prefixlen, -1, -1):
        network = ipaddress.ip_network((address, prefix), strict=False)
        if network in networks:
            found.append(str(network))
    return found


async def check_ip_reputation(arguments: dict[str, Any], feed: str | None) -> types.CallToolResult:
    if feed is None:
        raise BaselineError("no feed configured")
    try:
        address = ipaddress.ip_address(str(arguments.get("ip_address", "")))
    except ValueError:
        raise BaselineError("ip_address is not an IP address") from None
    networks = load_feed(feed)
    matches = listed_in(address, networks)
    structured = {
        "ip_address": str(address),
        "version": address.version,
        "verdict": "listed" if matches else "unlisted",
        "matches": matches,
        "entries": len(networks),
    }
    return ok_result(f"{address}: {structured['verdict']} {', '.join(matches)}".rstrip(), structured)


def tools(feed: str | None) -> list[types.Tool]:
    found = [
        types.Tool(
            name="query_logs", description="grep -E a log file", input_schema=QUERY_SCHEMA, output_schema=RESULT_SCHEMA
        )
    ]
    if feed is not None:
        found.append(
            types.Tool(name="check_ip_reputation", description="look an address up in a netset", input_schema=IP_SCHEMA)
        )
    return found


def build_server(allowed: set[str], feed: str | None) -> Server:
    handlers: dict[str, Callable[[dict[str, Any]], Awaitable[types.CallToolResult]]] = {
        "query_logs": lambda arguments: query_logs(arguments, allowed),
        "check_ip_reputation": lambda arguments: check_ip_reputation(arguments, feed),
    }

    async def list_tools(
        ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools(feed))

    async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
        handler = handlers.get(params.name)
        if handler is None:
            return error_result(f"unknown tool {params.name}")
        try:
            return await handler(params.arguments or {})
        except (BaselineError, ValueError, TypeError) as exc:
            return error_result(str(exc))

    return Server("baseline", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve(allowed: set[str], feed: str | None) -> None:
    server = build_server(allowed, feed)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", action="append", default=[], help="an allowlisted log path (repeatable)")
    parser.add_argument("--feed", help="netset file for check_ip_reputation")
    parser.add_argument("--tag", default="", help="ignored; lets a benchmark find this process")
    args = parser.parse_args()
    anyio.run(serve, set(args.log), args.feed)


if __name__ == "__main__":
    main()
