"""completion/complete through `bastion serve` and the SDK's own client: log_path of the
triage prompt and of the log resource template from the allowlist, incident_id forms,
bounds, refusals, audit and rate limits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from broker.tools.completions import MAX_VALUES
from broker.tools.resources import LOG_TEMPLATE, log_uri
from tests.conftest import bastion_client, read_audit, write_policy
from tests.test_wire_refusals import RawStdio

pytestmark = pytest.mark.anyio

TRIAGE = types.PromptReference(name="triage_auth_failures")
INCIDENT = types.PromptReference(name="analyze_incident")
TEMPLATE = types.ResourceTemplateReference(uri=LOG_TEMPLATE)


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """auth.log with a rotation, remote/*/auth.log (a glob), and a file nobody allowlisted."""
    logs = tmp_path / "logs"
    (logs / "remote" / "web1").mkdir(parents=True)
    (logs / "remote" / "web2").mkdir()
    for path in ("auth.log", "auth.log.1", "remote/web1/auth.log", "remote/web2/auth.log", "secret.log"):
        (logs / path).write_text("sshd Failed password\n")
    policy = write_policy(
        tmp_path,
        [{"path": str(logs / "auth.log"), "rotations": True}, str(logs / "remote" / "*" / "auth.log")],
    )
    return {"logs": logs, "policy": policy, "audit": tmp_path / "audit.jsonl"}


async def values(client: Any, ref: Any, name: str, value: str) -> list[str]:
    completion = (await client.complete(ref, {"name": name, "value": value})).completion
    assert completion.total == len(completion.values) and completion.has_more is False
    return list(completion.values)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_log_path_completes_from_the_allowlist(site: dict[str, Path], mode: str) -> None:
    logs = site["logs"]
    every = [
        str(logs / "auth.log"),
        str(logs / "auth.log.1"),
        str(logs / "remote" / "web1" / "auth.log"),
        str(logs / "remote" / "web2" / "auth.log"),
    ]
    async with bastion_client(site["policy"], mode=mode) as client:
        assert client.server_capabilities is not None and client.server_capabilities.completions is not None
        for ref in (TRIAGE, TEMPLATE):
            assert await values(client, ref, "log_path", "") == every
            assert await values(client, ref, "log_path", str(logs / "auth")) == every[:2]
            assert await values(client, ref, "log_path", str(logs / "remote" / "web2")) == every[3:]
            assert await values(client, ref, "log_path", str(logs / "sec")) == []  # secret.log: no entry's
            assert await values(client, ref, "log_path", "/etc/") == []
        # What completes is accepted: the prompt renders with it, the template's URI reads.
        prompt = await client.get_prompt("triage_auth_failures", {"log_path": every[2]})
        assert every[2] in prompt.messages[0].content.text
        read = await client.read_resource(log_uri(every[1]))
        assert read.contents[0].text == "sshd Failed password\n"
        templates = (await client.list_resource_templates()).resource_templates
    assert [(t.uri_template, t.mime_type) for t in templates] == [(LOG_TEMPLATE, "text/plain")]


async def test_links_are_never_offered(site: dict[str, Path]) -> None:
    logs = site["logs"]
    (logs / "remote" / "web3").symlink_to(logs / "remote" / "web1")  # a directory link: web3/auth.log
    (logs / "auth.log.2").symlink_to(logs / "secret.log")
    os.link(logs / "secret.log", logs / "remote" / "web2" / "auth.log.tmp")  # not matched anyway
    (logs / "remote" / "web1" / "auth.log").unlink()
    os.link(logs / "secret.log", logs / "remote" / "web1" / "auth.log")  # a hard link
    async with bastion_client(site["policy"]) as client:
        offered = await values(client, TRIAGE, "log_path", "")
    assert offered == [str(logs / "auth.log"), str(logs / "auth.log.1"), str(logs / "remote" / "web2" / "auth.log")]


async def test_incident_id_completes_to_its_accepted_form(site: dict[str, Path]) -> None:
    async with bastion_client(site["policy"]) as client:
        assert await values(client, INCIDENT, "incident_id", "INC-2026-0042") == ["INC-2026-0042"]
        assert await values(client, INCIDENT, "incident_id", "inc 2026/42 ") == ["inc-2026-42"]
        assert await values(client, INCIDENT, "incident_id", "  #TKT:7") == ["TKT:7"]
        assert await values(client, INCIDENT, "incident_id", "x" * 80) == ["x" * 64]
        assert await values(client, INCIDENT, "incident_id", "../..") == []
        assert await values(client, INCIDENT, "incident_id", "") == []
        fixed = (await values(client, INCIDENT, "incident_id", "case #12"))[0]
        rendered = await client.get_prompt("analyze_incident", {"incident_id": fixed})  # accepted as offered
        assert "case-12" in rendered.messages[0].content.text


async def test_other_arguments_complete_to_nothing_and_unknown_refs_are_refused(site: dict[str, Path]) -> None:
    async with bastion_client(site["policy"]) as client:
        assert await values(client, TRIAGE, "since", "-2") == []
        assert await values(client, TEMPLATE, "uri", "") == []
        assert await values(client, TRIAGE, "log_path", "/" + "a" * 5000) == []
        for ref, needle in [
            (types.PromptReference(name="no_such_prompt"), "unknown prompt"),
            (types.ResourceTemplateReference(uri="file:///{path}"), "unknown resource template"),
        ]:
            with pytest.raises(MCPError, match=needle) as raised:
                await client.complete(ref, {"name": "log_path", "value": ""})
            assert raised.value.error.code == types.INVALID_PARAMS
    ends = [r for r in read_audit(site["audit"]) if r["event"] == "end"]
    assert [r["tool"] for r in ends] == ["completion/complete"] * 5
    assert [r["outcome"] for r in ends] == ["ok", "ok", "ok", "invalid", "invalid"]
    assert ends[0]["arguments"] == {
        "ref": {"type": "ref/prompt", "name": "triage_auth_failures"},
        "argument": {"name": "since", "value": "-2"},
    }


async def test_values_are_bounded(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.mkdir()
    for n in range(MAX_VALUES + 7):
        (hosts / f"h{n:03d}.log").write_text("x\n")
    policy = write_policy(tmp_path, [hosts / "*.log"])
    async with bastion_client(policy) as client:
        completion = (await client.complete(TEMPLATE, {"name": "log_path", "value": str(hosts)})).completion
    assert completion.values == [str(hosts / f"h{n:03d}.log") for n in range(MAX_VALUES)]
    assert completion.total == MAX_VALUES + 7 and completion.has_more is True


async def test_completions_are_rate_limited_on_their_own_bucket(site: dict[str, Path], tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path,
        [site["logs"] / "auth.log"],
        toml='[rate_limit.tools."completion/complete"]\ncalls = 2\nwindow_s = 60\n',
    )
    async with bastion_client(policy) as client:
        for _ in range(2):
            await values(client, TRIAGE, "log_path", "")
        with pytest.raises(MCPError, match="^rate limited for this client"):
            await client.complete(TRIAGE, {"name": "log_path", "value": ""})
        listed = await client.call_tool("list_logs", {})  # another tool's bucket is untouched
    assert not listed.is_error
    ends = [r["outcome"] for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"]
    assert ends == ["ok", "ok", "denied_rate", "ok"]


def test_a_completion_the_sdk_refuses_is_audited(site: dict[str, Path]) -> None:
    """A ref of no known type never reaches the handler: still refused with a record."""
    server = RawStdio(site["policy"])
    try:
        bad = {"ref": {"type": "ref/tool", "name": "x"}, "argument": {"name": "log_path", "value": ""}}
        server.send(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "completion/complete", "params": bad}).encode())
        answer = server.receive()
    finally:
        assert server.close() == 0
    assert answer["id"] == 7 and answer["error"]["code"] == types.INVALID_PARAMS
    assert "ref/tool" not in answer["error"]["message"]
    ends = [r for r in read_audit(site["audit"]) if r["event"] == "end"]
    assert [(r["tool"], r["outcome"]) for r in ends] == [("completion/complete", "invalid")]
    assert ends[0]["arguments"]["ref"] == bad["ref"]
