"""check_ip_reputation and the prompts end to end: `bastion intel compile` on the
sample feeds, then a real `bastion serve` over stdio with the SDK client (which
also validates every structured result against the tool's outputSchema)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import BASTION, EXAMPLES, SAMPLE_LOGS, bastion_client, read_audit, write_policy

pytestmark = pytest.mark.anyio
INTEL = EXAMPLES / "intel"
FEEDS = [
    ("firehol_level1", "firehol_level1.netset", "netset", "attacks", 90, ""),
    ("spamhaus_drop", "spamhaus_drop.txt", "netset", "hijacked_netblock", 95, ""),
    ("feodo_c2", "feodo_ipblocklist.csv", "csv", "botnet_c2", 85, "column = 2\n"),
    ("tor_exits", "tor_exit_addresses.txt", "tor_exits", "anonymizer", 40, ""),
]


def intel_policy(tmp_path: Path, feeds_dir: Path, extra: str = "") -> Path:
    lines = [
        "[intel]",
        f"database = {json.dumps(str(tmp_path / 'intel.db'))}",
        f"asn_mmdb = {json.dumps(str(INTEL / 'sample-asn.mmdb'))}",
        f"country_mmdb = {json.dumps(str(INTEL / 'sample-country.mmdb'))}",
        'refuse = ["8.8.8.0/24"]',
        extra,
    ]
    for name, file, fmt, category, confidence, options in FEEDS:
        lines += [
            "[[intel.feeds]]",
            f'name = "{name}"',
            f"path = {json.dumps(str(feeds_dir / file))}",
            f'format = "{fmt}"',
            f'category = "{category}"',
            f"confidence = {confidence}",
            options,
        ]
    return write_policy(tmp_path, [SAMPLE_LOGS / "auth.log"], toml="\n".join(lines))


def compile_intel(policy: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BASTION), "intel", "compile", "--policy", str(policy)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def feeds(tmp_path: Path) -> Path:
    folder = tmp_path / "feeds"
    shutil.copytree(INTEL, folder)
    return folder


async def check(client: Any, address: str, history: bool = False) -> Any:
    return await client.call_tool("check_ip_reputation", {"ip_address": address, "include_history": history})


async def test_attacker_from_the_logs_is_flagged_with_feeds_enrichment_and_ages(tmp_path: Path, feeds: Path) -> None:
    policy = intel_policy(tmp_path, feeds)
    done = compile_intel(policy)
    assert done.returncode == 0, done.stderr
    assert "malformed" in done.stdout and "firehol_level1" in done.stdout
    async with bastion_client(policy) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert names == ["list_logs", "query_logs", "check_ip_reputation"]
        result = await check(client, "45.155.205.233")
    assert not result.is_error
    data = result.structured_content
    assert data["verdict"] == "malicious" and data["ip_address"] == "45.155.205.233" and data["version"] == 4
    listed = {(m["feed"], m["matched_prefix"]) for m in data["matches"]}
    assert listed == {("firehol_level1", "45.155.205.233/32"), ("spamhaus_drop", "45.155.205.0/24")}
    assert data["matches"][0]["matched_prefix"] == "45.155.205.233/32"  # most specific first
    assert data["enrichment"]["asn"] == 64496 and data["enrichment"]["country"] == "RU"
    assert {feed["name"] for feed in data["feeds"]} == {name for name, *_ in FEEDS}
    assert all(feed["stale"] is False and feed["malformed_lines"] > 0 for feed in data["feeds"])
    assert data["warnings"] == []
    end = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"][-1]
    assert end["tool"] == "check_ip_reputation" and end["outcome"] == "ok" and end["verdict"] == "malicious"


@pytest.mark.parametrize(
    ("address", "verdict", "feeds_listed"),
    [
        ("218.92.0.107", "unlisted", set()),
        ("185.220.101.47", "malicious", {"firehol_level1", "tor_exits"}),
        ("193.32.162.157", "malicious", {"spamhaus_drop"}),
        ("141.98.11.23", "malicious", {"feodo_c2"}),
        ("2a06:4880:1000::d5", "malicious", {"firehol_level1"}),
    ],
)
async def test_verdicts_for_the_sample_attackers(
    tmp_path: Path, feeds: Path, address: str, verdict: str, feeds_listed: set[str]
) -> None:
    policy = intel_policy(tmp_path, feeds)
    assert compile_intel(policy).returncode == 0
    async with bastion_client(policy) as client:
        result = await check(client, address)
    assert not result.is_error, result.content[0].text
    assert result.structured_content["verdict"] == verdict
    assert {m["feed"] for m in result.structured_content["matches"]} == feeds_listed
    if verdict == "unlisted":
        assert "not evidence that it is harmless" in result.content[0].text


async def test_a_low_confidence_listing_alone_is_suspicious(tmp_path: Path, feeds: Path) -> None:
    tor = (feeds / "tor_exit_addresses.txt").read_text()
    lone = next(
        line.split()[1] for line in tor.splitlines() if line.startswith("ExitAddress") and "185.220.101.47" not in line
    )
    policy = intel_policy(tmp_path, feeds)
    assert compile_intel(policy).returncode == 0
    async with bastion_client(policy) as client:
        result = await check(client, lone)
    data = result.structured_content
    if {m["feed"] for m in data["matches"]} == {"tor_exits"}:
        assert data["verdict"] == "suspicious"
    else:  # the address is listed elsewhere too: the rule still holds for the strongest listing
        assert data["verdict"] == "malicious"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.1.6", "private"),
        ("045.155.205.233", "leading zeros"),
        ("8.8.8.8", "policy excludes"),
        ("2001:db8::1", "documentation"),
        ("45.155.205.233 ", "whitespace"),
    ],
)
async def test_refused_addresses_never_reach_a_worker(tmp_path: Path, feeds: Path, address: str, reason: str) -> None:
    policy = intel_policy(tmp_path, feeds)
    assert compile_intel(policy).returncode == 0
    async with bastion_client(policy) as client:
        result = await check(client, address)
    assert result.is_error and reason in result.content[0].text
    end = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"][-1]
    assert end["outcome"] == "invalid" and "worker_pid" not in end


async def test_history_across_two_compiles_and_stale_feed_warning(tmp_path: Path, feeds: Path) -> None:
    policy = intel_policy(tmp_path, feeds, extra="max_age_hours = 24")
    assert compile_intel(policy).returncode == 0
    time.sleep(1.1)  # so the second compile's last_seen differs
    netset = feeds / "firehol_level1.netset"
    netset.write_text(netset.read_text().replace("45.155.205.233\n", "").replace("45.155.205.233/32\n", ""))
    old = time.time() - 3 * 86400
    os.utime(feeds / "spamhaus_drop.txt", (old, old))
    assert compile_intel(policy).returncode == 0
    async with bastion_client(policy) as client:
        now_only = (await check(client, "45.155.205.233")).structured_content
        history = (await check(client, "45.155.205.233", history=True)).structured_content
    assert {m["feed"] for m in now_only["matches"]} == {"spamhaus_drop"}
    former = [m for m in history["matches"] if m["feed"] == "firehol_level1"]
    assert len(former) == 1 and former[0]["listed_now"] is False
    assert former[0]["first_seen"] <= former[0]["last_seen"]
    current = next(m for m in history["matches"] if m["feed"] == "spamhaus_drop")
    assert current["listed_now"] is True and current["first_seen"] < current["last_seen"]
    assert any("spamhaus_drop is 72" in warning for warning in history["warnings"])
    assert next(f for f in history["feeds"] if f["name"] == "spamhaus_drop")["stale"] is True


async def test_missing_or_damaged_database_gives_a_clean_error(tmp_path: Path, feeds: Path) -> None:
    policy = intel_policy(tmp_path, feeds)
    async with bastion_client(policy) as client:
        missing = await check(client, "45.155.205.233")
        assert missing.is_error and "bastion intel compile" in missing.content[0].text
        (tmp_path / "intel.db").write_bytes(b"BSTNINT1" + b"\xff" * 200)
        damaged = await check(client, "45.155.205.233")
        assert damaged.is_error and "damaged" in damaged.content[0].text
        assert str(tmp_path) not in damaged.content[0].text
        assert not (
            await client.call_tool(
                "query_logs", {"log_path": str(SAMPLE_LOGS / "auth.log"), "pattern": "sshd", "max_lines": 1}
            )
        ).is_error
    ends = [r for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"]
    assert [r["outcome"] for r in ends] == ["internal_error", "internal_error", "ok"]
    assert "bad_database" in ends[1]["worker_error"]


async def test_without_intel_the_tool_is_not_offered(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, [SAMPLE_LOGS / "auth.log"])
    async with bastion_client(policy) as client:
        assert [tool.name for tool in (await client.list_tools()).tools] == ["list_logs", "query_logs"]
        with pytest.raises(MCPError, match="unknown tool"):
            await check(client, "45.155.205.233")


# --- prompts ---------------------------------------------------------------------------


async def test_prompts_render_and_validate(tmp_path: Path, feeds: Path) -> None:
    policy = intel_policy(tmp_path, feeds)
    async with bastion_client(policy) as client:
        listed = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
        assert set(listed) == {"analyze_incident", "triage_auth_failures"}
        incident = await client.get_prompt("analyze_incident", {"incident_id": "INC-2026-0042"})
        text = incident.messages[0].content.text
        assert "INC-2026-0042" in text and "check_ip_reputation" in text and "query_logs" in text and "Timeline" in text
        triage = await client.get_prompt("triage_auth_failures", {"since": "-2h"})
        text = triage.messages[0].content.text
        assert str(SAMPLE_LOGS / "auth.log") in text and "-2h" in text
        for name, arguments, needle in [
            ("analyze_incident", {"incident_id": "../../etc/passwd"}, "incident_id must be"),
            ("analyze_incident", {}, "missing required argument"),
            ("triage_auth_failures", {"log_path": "/etc/shadow"}, "not an allowlisted log"),
            ("triage_auth_failures", {"since": "yesterday"}, "since must be"),
            ("triage_auth_failures", {"hacker": "1"}, "unknown argument"),
            ("no_such_prompt", {}, "unknown prompt"),
        ]:
            with pytest.raises(MCPError, match=needle):
                await client.get_prompt(name, arguments)
    outcomes = [r["outcome"] for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"]
    assert outcomes == ["ok", "ok"] + ["invalid"] * 6
