"""Per-client scopes (broker/scopes.py): the policy keys and their errors, what each listing
shows a scoped client, refusals that look like a path or name that does not exist (audited,
with the scope's name, and nothing opened), the tighter max_lines and rate, and two HTTP
clients with different tokens and scopes over real HTTP with the SDK's client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from broker import scopes
from broker.files import allowlist as allowlist_module
from broker.files import glob_members, opened_files
from broker.files.allowlist import NOT_ALLOWED, Allowlist
from broker.policy import PROMPT_NAMES, TOOL_NAMES, Policy, PolicyError, load_policy, parse_policy
from broker.ratelimit import Rate, RateLimiter
from broker.tools import prompts, registry
from broker.tools.resources import LOG_TEMPLATE, log_uri
from broker.transport.http_tokens import digest
from tests.conftest import ROOT, bastion_client, read_audit, write_policy
from tests.test_http import Served, free_port, http_client

TOKENS = {"alice": "bst_alice-scoped-token-tests", "bob": "bst_bob-scoped-token-tests", "carol": "bst_carol-token"}
TRIAGE = types.PromptReference(name="triage_auth_failures")
INCIDENT = types.PromptReference(name="analyze_incident")
TEMPLATE = types.ResourceTemplateReference(uri=LOG_TEMPLATE)
BASE = b'[[logs]]\npath = "/var/log/auth.log"\nname = "auth"\n[[logs]]\npath = "/var/log/web/*.log"\n'
AUDIT = b'[audit]\npath = "/var/log/bastion/audit.jsonl"\n'


def parsed(extra: str, logs: bytes = BASE) -> Policy:
    return parse_policy(logs + AUDIT + extra.encode(), Path("/etc/bastion"))


# --- the policy keys -------------------------------------------------------------------------


def test_the_names_a_scope_may_grant_are_the_tools_and_prompts_that_exist() -> None:
    assert TOOL_NAMES == tuple(row.name for row in registry.TOOLS)
    assert PROMPT_NAMES == tuple(spec.name for spec in prompts.PROMPTS)


def test_a_policy_without_scopes_gives_everyone_everything() -> None:
    policy = parsed('[[http.clients]]\nname = "alice"\ntoken_sha256 = "' + "0" * 64 + '"\n')
    assert policy.scopes == {} and policy.stdio.scope == "" and policy.http.clients[0].scope == ""
    for client in (None, "alice", "anyone"):
        assert scopes.of(policy, client) is scopes.EVERYTHING
    assert scopes.EVERYTHING.policy(policy) is policy and scopes.EVERYTHING.audit_fields() == {}


def test_scopes_parse_logs_by_name_or_path_and_pick_the_clients() -> None:
    policy = parsed(
        '[stdio]\nscope = "soc"\n'
        '[[http.clients]]\nname = "alice"\ntoken_sha256 = "' + "0" * 64 + '"\nscope = "web"\n'
        '[[http.clients]]\nname = "carol"\ntoken_sha256 = "' + "1" * 64 + '"\n'
        '[scopes.soc]\nlogs = ["auth", "/var/log/auth.log", "../../var/log/web/*.log"]\nmax_lines = 5\n'
        '[scopes.web]\nlogs = ["/var/log/web/*.log"]\ntools = ["list_logs"]\nprompts = []\n'
        "rate = { calls = 3, window_s = 60 }\n"
    )
    soc, web = scopes.of(policy, None), scopes.of(policy, "alice")
    assert soc.logs == {"/var/log/auth.log", "/var/log/web/*.log"}  # a name, a path, a relative path: resolved
    assert (soc.tools, soc.prompts, soc.max_lines, soc.rate) == (None, None, 5, None)
    assert web.logs == {"/var/log/web/*.log"} and web.tools == {"list_logs"} and web.prompts == frozenset()
    assert web.rate == Rate(3, 60) and web.audit_fields() == {"scope": "web"}
    assert scopes.of(policy, "carol") is scopes.EVERYTHING  # a listed client without a scope
    assert scopes.of(policy, "mallory") is scopes.NOTHING  # not in this policy: fail closed
    seen = soc.policy(policy)
    assert seen.limits.max_lines == 5 and policy.limits.max_lines == 1000  # the policy itself is unchanged
    assert [entry.path for entry in web.policy(policy).logs] == ["/var/log/web/*.log"]


def test_a_scope_without_check_ip_reputation_sees_no_intel() -> None:
    intel = '[intel]\ndatabase = "/var/lib/bastion/intel.db"\n'
    policy = parsed(intel + '[stdio]\nscope = "a"\n[scopes.a]\ntools = ["query_logs"]\n[scopes.b]\n')
    assert scopes.of(policy, None).policy(policy).intel is None and policy.intel is not None
    assert scopes.Scope("b").policy(policy) is policy  # a scope that grants everything changes nothing


CLIENT = '[[http.clients]]\nname = "alice"\ntoken_sha256 = "' + "0" * 64 + '"\n'


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (CLIENT + 'scope = "nope"\n', "http.clients[0].scope: no [scopes.nope] table"),
        ('[stdio]\nscope = "nope"\n', "stdio.scope: no [scopes.nope] table"),
        ('[scopes.a]\nlogs = ["auth", "syslog"]\n', "scopes.a.logs[1]: 'syslog' is neither the name nor the path"),
        ('[scopes.a]\nlogs = ["/var/log/web/a.log"]\n', "scopes.a.logs[0]: '/var/log/web/a.log' is neither"),
        ('[scopes.a]\nlogs = [""]\n', "scopes.a.logs[0]: must be a non-empty path"),
        ('[scopes.a]\ntools = ["query_logs", "rm"]\n', "scopes.a.tools[1]: unknown 'rm'"),
        ('[scopes.a]\nprompts = ["free_form"]\n', "scopes.a.prompts[0]: unknown 'free_form'"),
        ("[limits]\nmax_lines = 50\n[scopes.a]\nmax_lines = 51\n", "scopes.a.max_lines: must be at most"),
        ("[scopes.a]\nmax_lines = 0\n", "scopes.a.max_lines"),
        ("[scopes.a]\nrate = { calls = 0, window_s = 60 }\n", "scopes.a.rate.calls"),
        ("[scopes.a]\nrate = { calls = 1 }\n", "scopes.a.rate"),
        ('[scopes.a]\nlog = ["auth"]\n', "scopes.a"),  # unknown key: a typo never widens a scope
        ('[scopes."-a"]\n', "scopes.-a: a scope name is"),
        ('[stdio]\nscope = "a"\nuser = "x"\n', "stdio"),
    ],
)
def test_scope_errors_name_the_key(extra: str, needle: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parsed(extra)
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    ("logs", "needle"),
    [
        (BASE + b'[[logs]]\npath = "/var/log/syslog"\nname = "auth"\n', "logs: entry names must be unique"),
        (b'[[logs]]\npath = "/var/log/syslog"\nname = "has space"\n', "logs[0].name"),
    ],
)
def test_log_names_are_unique_and_well_formed(logs: bytes, needle: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parsed("", logs)
    assert needle in str(caught.value)


def test_the_deploy_guides_example_is_a_valid_policy() -> None:
    section = (ROOT / "docs" / "DEPLOY.md").read_text().split("Scopes: a different reach per analyst", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0].replace('"…"', '"' + "0" * 64 + '"')
    policy = parse_policy(example.encode() + AUDIT, Path("/etc/bastion"))
    dave = scopes.of(policy, "dave")
    assert dave.logs == {"/var/log/nginx/*.log"} and dave.max_lines == 200 and dave.rate == Rate(20, 60)
    assert scopes.of(policy, "alice").logs == {"/var/log/auth.log", "/var/log/nginx/*.log"}
    assert scopes.of(policy, "root-cause") is scopes.EVERYTHING


# --- nothing outside a scope is opened -------------------------------------------------------


def test_an_out_of_scope_log_is_refused_as_unlisted_before_any_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "auth.log").write_text("a\n")
    (tmp_path / "secret.log").write_text("s\n")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "a.log").write_text("w\n")
    logs: list[str | Path | dict[str, Any]] = [
        {"path": str(tmp_path / "auth.log"), "name": "auth"},
        {"path": str(tmp_path / "secret.log"), "name": "secret"},
        str(tmp_path / "web" / "*.log"),
    ]
    policy = load_policy(write_policy(tmp_path, logs, toml='[stdio]\nscope = "a"\n[scopes.a]\nlogs = ["auth"]\n'))
    full = Allowlist(policy)
    view = scopes.of(policy, None).allowlist(full)
    assert [log.path for log in view.logs()] == [str(tmp_path / "auth.log")]
    opened: list[object] = []
    real = opened_files.open_beneath

    def spy(*args: Any) -> int:
        opened.append(args)
        return real(*args)

    # Every open of a file or a listed directory beneath a pinned one goes through these two.
    monkeypatch.setattr(opened_files, "open_beneath", spy)
    monkeypatch.setattr(glob_members, "open_beneath", spy)
    for path in (tmp_path / "secret.log", tmp_path / "web" / "a.log", tmp_path / "web" / "*.log"):
        with pytest.raises(allowlist_module.ToolError) as caught:
            view.open_search(str(path))
        # The refusal of a path no entry names, with only in-scope entries as the closest.
        assert caught.value.message == view.refusal(str(path))
        assert str(tmp_path / "secret.log") not in caught.value.message and "web" not in caught.value.message
        assert caught.value.message.startswith(NOT_ALLOWED)
    assert opened == []
    view.close()  # a view leaves the descriptors to the allowlist that pinned them
    _, fd = full.open(str(tmp_path / "secret.log"))
    allowlist_module.os.close(fd)
    full.close()


def test_a_scope_rate_is_one_more_bucket_over_all_of_a_clients_calls() -> None:
    now = [0.0]
    limiter = RateLimiter(Rate(100, 60), Rate(1000, 60), clock=lambda: now[0])
    tight = Rate(2, 60)
    assert limiter.check("bob", "list_logs", tight).allowed
    assert limiter.check("bob", "query_logs", tight).allowed
    refused = limiter.check("bob", "resources/read", tight)
    assert not refused.allowed and refused.scope == "client" and refused.retry_after_s == 30
    assert limiter.check("alice", "list_logs", tight).allowed  # per client, not per scope
    assert limiter.check("bob", "list_logs").allowed  # without the scope's rate: only [rate_limit]
    now[0] = 30.0
    assert limiter.check("bob", "list_logs", tight).allowed
    # A changed rate (a reloaded policy) replaces the bucket, keeping no more than it had left.
    assert not limiter.check("bob", "list_logs", Rate(5, 60)).allowed


# --- a stdio user's scope, end to end ----------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """auth.log (named), secret.log (by path), web/*.log (a named glob); a policy without scopes."""
    (tmp_path / "web").mkdir()
    files = {
        "auth": tmp_path / "auth.log",
        "secret": tmp_path / "secret.log",
        "web_a": tmp_path / "web" / "a.log",
        "web_b": tmp_path / "web" / "b.log",
    }
    for name, path in files.items():
        path.write_text("".join(f"sshd {name} Failed password {n}\n" for n in range(10)))
    return {**files, "dir": tmp_path, "audit": tmp_path / "audit.jsonl"}


def site_policy(site: dict[str, Path], toml: str) -> Path:
    logs: list[str | Path | dict[str, Any]] = [
        {"path": str(site["auth"]), "name": "auth", "description": "SSH"},
        str(site["secret"]),
        {"path": str(site["dir"] / "web" / "*.log"), "name": "web"},
    ]
    return write_policy(site["dir"], logs, toml=toml)


def text(result: types.CallToolResult) -> str:
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


SOC = '[scopes.soc]\nlogs = ["auth", "{secret}"]\ntools = ["list_logs", "query_logs"]\n'
SOC += 'prompts = ["triage_auth_failures"]\nmax_lines = 5\n'


@pytest.mark.anyio
async def test_a_stdio_scope_filters_every_listing_and_refuses_the_rest(site: dict[str, Path]) -> None:
    policy = site_policy(site, '[stdio]\nscope = "soc"\n' + SOC.replace("{secret}", str(site["secret"])))
    granted = [str(site["auth"]), str(site["secret"])]
    async with bastion_client(policy) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        templates = (await client.list_resource_templates()).resource_templates
        listed_prompts = [p.name for p in (await client.list_prompts()).prompts]
        listed = await client.call_tool("list_logs", {})
        completed = (await client.complete(TRIAGE, {"name": "log_path", "value": ""})).completion.values
        templated = (await client.complete(TEMPLATE, {"name": "log_path", "value": ""})).completion.values
        out_of_scope = await client.call_tool("query_logs", {"log_path": str(site["web_a"]), "pattern": "x"})
        unlisted = await client.call_tool("query_logs", {"log_path": str(site["dir"] / "nowhere.log"), "pattern": "x"})
        too_many = await client.call_tool("query_logs", {"log_path": granted[0], "pattern": "sshd", "max_lines": 6})
        found = await client.call_tool("query_logs", {"log_path": granted[0], "pattern": "sshd", "max_lines": 5})
        with pytest.raises(MCPError) as resource_refused:
            await client.read_resource(log_uri(str(site["web_b"])))
        with pytest.raises(MCPError) as prompt_refused:
            await client.get_prompt("analyze_incident", {"incident_id": "INC-1"})
        with pytest.raises(MCPError) as prompt_log_refused:
            await client.get_prompt("triage_auth_failures", {"log_path": str(site["web_a"])})
        with pytest.raises(MCPError) as completion_refused:
            await client.complete(INCIDENT, {"name": "incident_id", "value": "INC"})
    assert list(tools) == ["list_logs", "query_logs"]
    log_path = tools["query_logs"].input_schema["properties"]["log_path"]
    assert log_path["enum"] == granted  # exactly the entries it may search
    assert tools["query_logs"].input_schema["properties"]["max_lines"]["maximum"] == 5
    assert resources == [log_uri(path) for path in granted] and len(templates) == 1
    assert listed_prompts == ["triage_auth_failures"]
    assert [log["log_path"] for log in listed.structured_content["logs"]] == granted  # type: ignore[index]
    assert completed == granted and templated == granted
    assert out_of_scope.is_error and text(out_of_scope).startswith(NOT_ALLOWED)
    assert "web" not in text(out_of_scope) and "web" not in text(unlisted)
    assert too_many.is_error and "max_lines must be between 1 and 5" in text(too_many)
    assert not found.is_error and len(found.structured_content["lines"]) == 5  # type: ignore[index]
    assert "not an allowlisted" in str(resource_refused.value) and "web" not in str(resource_refused.value)
    assert "unknown prompt: 'analyze_incident'" in str(prompt_refused.value)
    assert "not an allowlisted" in str(prompt_log_refused.value)
    assert "unknown prompt: 'analyze_incident'" in str(completion_refused.value)
    records = [r for r in read_audit(site["audit"]) if r["event"] in ("begin", "end")]
    assert records and all(r["scope"] == "soc" for r in records)
    refused = [r for r in records if r["event"] == "end" and r["arguments"].get("log_path") == str(site["web_a"])]
    assert [(r["outcome"], r["error"]) for r in refused] == [("invalid", text(out_of_scope))]
    assert "worker_pid" not in refused[0]  # refused before any worker (or file) was needed


@pytest.mark.anyio
async def test_a_scope_without_logs_or_tools_shows_nothing_of_them(site: dict[str, Path]) -> None:
    policy = site_policy(site, '[stdio]\nscope = "none"\n[scopes.none]\nlogs = []\ntools = []\nprompts = []\n')
    async with bastion_client(policy) as client:
        assert (await client.list_tools()).tools == []
        assert (await client.list_resources()).resources == []
        assert (await client.list_resource_templates()).resource_templates == []
        assert (await client.list_prompts()).prompts == []
        with pytest.raises(MCPError) as tool_refused:
            await client.call_tool("list_logs", {})
        with pytest.raises(MCPError) as template_refused:
            await client.complete(TEMPLATE, {"name": "log_path", "value": ""})
    assert "unknown tool: 'list_logs'" in str(tool_refused.value)
    assert "unknown resource template" in str(template_refused.value)
    ends = [(r["tool"], r["outcome"], r["scope"]) for r in read_audit(site["audit"]) if r["event"] == "end"]
    assert ends == [("list_logs", "invalid", "none"), ("completion/complete", "invalid", "none")]


# --- two HTTP clients with different tokens and scopes -----------------------------------------


def http_site_policy(site: dict[str, Path]) -> Path:
    clients = "".join(
        f'[[http.clients]]\nname = "{name}"\ntoken_sha256 = "{digest(token)}"\n'
        + {"alice": 'scope = "soc"\n', "bob": 'scope = "web"\n', "carol": ""}[name]
        for name, token in TOKENS.items()
    )
    web = '[scopes.web]\nlogs = ["web"]\ntools = ["list_logs"]\nprompts = []\nrate = { calls = 3, window_s = 60 }\n'
    return site_policy(site, clients + SOC.replace("{secret}", str(site["secret"])) + web)


async def sees(url: str, token: str) -> dict[str, Any]:
    async with http_client(url, token) as client:
        tools = (await client.list_tools()).tools
        return {
            "tools": [tool.name for tool in tools],
            "resources": [str(r.uri) for r in (await client.list_resources()).resources],
            "prompts": [p.name for p in (await client.list_prompts()).prompts],
            "logs": [log["log_path"] for log in (await client.call_tool("list_logs", {})).structured_content["logs"]],  # type: ignore[index]
        }


@pytest.mark.anyio
async def test_two_http_clients_with_different_scopes(site: dict[str, Path]) -> None:
    server = Served(http_site_policy(site), free_port())
    web_files = [log_uri(str(site["web_a"])), log_uri(str(site["web_b"]))]
    try:
        alice, bob, carol = [await sees(server.url, TOKENS[name]) for name in ("alice", "bob", "carol")]
        async with http_client(server.url, TOKENS["alice"]) as client:
            refused = await client.call_tool("query_logs", {"log_path": str(site["web_a"]), "pattern": "sshd"})
            found = await client.call_tool("query_logs", {"log_path": str(site["auth"]), "pattern": "sshd"})
        async with http_client(server.url, TOKENS["bob"]) as client:
            with pytest.raises(MCPError) as unknown:
                await client.call_tool("query_logs", {"log_path": str(site["web_a"]), "pattern": "sshd"})
            read = await client.read_resource(web_files[0])
            limited = await client.call_tool("list_logs", {})  # bob's 4th call: over his scope's rate
        async with http_client(server.url, TOKENS["carol"]) as client:
            unscoped = await client.call_tool("query_logs", {"log_path": str(site["web_a"]), "pattern": "sshd"})
    finally:
        code, stderr = server.stop()
    assert code == 0, stderr
    assert alice == {
        "tools": ["list_logs", "query_logs"],
        "resources": [log_uri(str(site["auth"])), log_uri(str(site["secret"]))],
        "prompts": ["triage_auth_failures"],
        "logs": [str(site["auth"]), str(site["secret"])],
    }
    assert bob == {
        "tools": ["list_logs"],
        "resources": web_files,
        "prompts": [],
        "logs": [str(site["dir"] / "web/*.log")],
    }
    assert carol["tools"] == ["list_logs", "query_logs"] and len(carol["resources"]) == 4 and len(carol["logs"]) == 3
    assert carol["prompts"] == ["analyze_incident", "triage_auth_failures"]
    assert refused.is_error and text(refused).startswith(NOT_ALLOWED) and "web" not in text(refused)
    assert not found.is_error and "unknown tool: 'query_logs'" in str(unknown.value)
    assert read.contents and limited.is_error and "rate limited for this client" in text(limited)
    assert not unscoped.is_error
    ends = [r for r in read_audit(site["audit"]) if r["event"] == "end"]
    assert [(r["client"], r["tool"], r["outcome"], r.get("scope")) for r in ends] == [
        ("alice", "list_logs", "ok", "soc"),
        ("bob", "list_logs", "ok", "web"),
        ("carol", "list_logs", "ok", None),
        ("alice", "query_logs", "invalid", "soc"),
        ("alice", "query_logs", "ok", "soc"),
        ("bob", "query_logs", "invalid", "web"),
        ("bob", "resources/read", "ok", "web"),
        ("bob", "list_logs", "denied_rate", "web"),
        ("carol", "query_logs", "ok", None),
    ]
