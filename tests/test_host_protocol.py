"""Protocol details a host sees (issue 18 item 6), through the SDK's own client over stdio:
nullable output fields as anyOf (no type arrays), serverInfo's title, and the error a
resources/read of an unknown URI gets (its code for the negotiated protocol, data.uri)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from broker.policy import Limits
from broker.tools.check_ip_reputation import tool as check_ip_reputation
from broker.tools.query_logs import tool as query_logs
from broker.tools.resources import MAX_URI_CHARS, log_uri
from broker.transport.mcp_server import RESOURCE_NOT_FOUND, TITLE
from tests.conftest import SAMPLE_LOGS, bastion_client, write_policy
from tests.test_intel_e2e import INTEL, compile_intel, intel_policy

AUTH = SAMPLE_LOGS / "auth.log"
# The code an unknown resource gets: -32002 in the handshake protocols, -32602 on 2026-07-28.
NOT_FOUND = {"legacy": RESOURCE_NOT_FOUND, "auto": types.INVALID_PARAMS}


def type_arrays(schema: Any, where: str = "$") -> list[str]:
    """Every place in `schema` whose "type" is a list (JSON pointer-ish), depth first."""
    found: list[str] = []
    if isinstance(schema, dict):
        if isinstance(schema.get("type"), list):
            found.append(where)
        for key, value in schema.items():
            found += type_arrays(value, f"{where}/{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found += type_arrays(value, f"{where}/{index}")
    return found


def nulls_allowed(schema: Any) -> int:
    """How many anyOf branches in `schema` are {"type": "null"}."""
    if isinstance(schema, list):
        return sum(nulls_allowed(value) for value in schema)
    if not isinstance(schema, dict):
        return 0
    own = sum(1 for branch in schema.get("anyOf", []) if branch == {"type": "null"})
    return own + sum(nulls_allowed(value) for value in schema.values())


def test_the_walk_finds_a_type_array_at_any_depth() -> None:
    nested = {"type": "object", "properties": {"a": {"items": [{"type": ["integer", "null"]}]}}}
    assert type_arrays(nested) == ["$/properties/a/items/0"]
    assert type_arrays({"anyOf": [{"type": "integer"}, {"type": "null"}]}) == []


@pytest.mark.parametrize(
    "tool", [query_logs.tool(Limits()), check_ip_reputation.tool()], ids=["query_logs", "check_ip_reputation"]
)
def test_no_schema_of_a_tool_has_a_type_array(tool: types.Tool) -> None:
    assert type_arrays(tool.output_schema) == []
    assert type_arrays(tool.input_schema) == []


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    # The intel policy offers both tools; its feeds are copied, as tests/test_intel_e2e.py does.
    feeds = tmp_path / "feeds"
    shutil.copytree(INTEL, feeds)
    made = intel_policy(tmp_path, feeds)
    done = compile_intel(made)
    assert done.returncode == 0, done.stderr
    return made


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_what_a_host_sees(policy: Path, tmp_path: Path, mode: str) -> None:
    async with bastion_client(policy, mode=mode) as client:
        assert client.server_info is not None
        assert (client.server_info.name, client.server_info.title) == ("bastion", TITLE)
        tools = (await client.list_tools()).tools
        assert [tool.name for tool in tools] == ["list_logs", "query_logs", "check_ip_reputation"]
        for tool in tools:
            assert type_arrays(tool.output_schema) == [] and type_arrays(tool.input_schema) == [], tool.name
        # The 9 nullable fields (1 of them list_logs), each an anyOf with null (the SDK client validates every
        # structured result below against these schemas, null and non-null branches alike).
        assert sum(nulls_allowed(tool.output_schema) for tool in tools) == 9
        await _results_validate(client)
        await _unknown_resources_are_refused(client, mode, tmp_path)


async def _results_validate(client: Any) -> None:
    listed = await client.call_tool("query_logs", {"log_path": str(AUTH), "pattern": "Failed password", "max_lines": 2})
    counted = await client.call_tool("query_logs", {"log_path": str(AUTH), "pattern": "sshd", "count_only": True})
    checked = await client.call_tool("check_ip_reputation", {"ip_address": "45.155.205.233"})
    assert not (listed.is_error or counted.is_error or checked.is_error)
    assert listed.structured_content["total_matches"] is None
    assert listed.structured_content["truncated_reason"] == "max_lines"
    assert isinstance(counted.structured_content["total_matches"], int)
    assert counted.structured_content["truncated_reason"] is None
    assert isinstance(checked.structured_content["enrichment"]["asn"], int)


async def _unknown_resources_are_refused(client: Any, mode: str, tmp_path: Path) -> None:
    unknown = [
        "file:///etc/passwd",
        log_uri(str(tmp_path / "nonexistent.log")),
        "http://example.invalid/x",
        "not a uri",
    ]
    for uri in unknown:
        with pytest.raises(MCPError) as raised:
            await client.read_resource(uri)
        error = raised.value.error
        assert (error.code, error.data) == (NOT_FOUND[mode], {"uri": uri}), uri
        assert str(tmp_path) not in error.message and "Traceback" not in error.message
    overlong = "file:///" + "a" * (2 * MAX_URI_CHARS)
    with pytest.raises(MCPError) as raised:
        await client.read_resource(overlong)
    assert raised.value.error.code == NOT_FOUND[mode]
    assert raised.value.error.data == {"uri": overlong[:MAX_URI_CHARS]}
    # A known resource still reads.
    assert (await client.read_resource(log_uri(str(AUTH)))).contents


@pytest.mark.anyio
async def test_a_read_refused_for_another_reason_is_an_internal_error_with_data_uri(tmp_path: Path) -> None:
    toml = '[rate_limit.tools."resources/read"]\ncalls = 1\nwindow_s = 3600\n'
    uri = log_uri(str(AUTH))
    async with bastion_client(write_policy(tmp_path, [AUTH], toml=toml)) as client:
        assert (await client.read_resource(uri)).contents  # the one token
        with pytest.raises(MCPError) as raised:
            await client.read_resource(uri)
    error = raised.value.error
    assert (error.code, error.data) == (types.INTERNAL_ERROR, {"uri": uri})
    assert error.message.startswith("rate limited")
