"""The model finds valid log paths without resources: list_logs, the log_path schema and the
refusal's closest paths, each through `bastion serve` and the SDK's own client over stdio."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from broker.files.allowlist import CLOSEST_HINT, NOT_ALLOWED
from broker.tools.list_logs import FILES_SHOWN, MAX_FILTER_CHARS, MAX_LOGS, OUTPUT_SCHEMA
from tests.conftest import bastion_client, read_audit, write_policy

pytestmark = pytest.mark.anyio

DAY = 86_400
BASE = datetime(2026, 11, 20, tzinfo=UTC).timestamp()


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def put(path: Path, data: bytes, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """auth.log with rotations (.1, .2.gz), web/*.log (a glob), a missing file, and a policy."""
    logs = tmp_path / "logs"
    put(logs / "auth.log", b"a" * 300, BASE + 3 * DAY)
    put(logs / "auth.log.1", b"b" * 200, BASE + 2 * DAY)
    put(logs / "auth.log.2.gz", gzip.compress(b"c\n"), BASE + DAY)
    put(logs / "web" / "old.log", b"o" * 10, BASE)
    put(logs / "web" / "new.log", b"n" * 20, BASE + 4 * DAY)
    outside = put(tmp_path / "outside" / "secret.log", b"s" * 777, BASE + 9 * DAY)
    policy = write_policy(
        tmp_path,
        [
            {"path": str(logs / "auth.log"), "description": "SSH and sudo", "rotations": True},
            {"path": str(logs / "web" / "*.log"), "description": "nginx"},
            {"path": str(logs / "gone.log")},
        ],
        toml="[rate_limit]\ncalls = 1000\nwindow_s = 60\n",
    )
    return {"logs": logs, "policy": policy, "outside": outside, "audit": tmp_path / "audit.jsonl"}


def by_path(structured: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {log["log_path"]: log for log in structured["logs"]}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_lists_every_entry_with_its_files_sizes_and_newest_time(site: dict[str, Path], mode: str) -> None:
    logs = site["logs"]
    async with bastion_client(site["policy"], mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["list_logs"].annotations is not None and tools["list_logs"].annotations.read_only_hint
        result = await client.call_tool("list_logs", {})  # the SDK client validates it against outputSchema
    assert not result.is_error, result.content[0].text
    structured = result.structured_content
    jsonschema.Draft202012Validator(OUTPUT_SCHEMA).validate(structured)
    assert structured["total_logs"] == 3 and structured["truncated"] is False and structured["notes"] == []
    listed = by_path(structured)
    assert list(listed) == [str(logs / "auth.log"), str(logs / "web" / "*.log"), str(logs / "gone.log")]
    auth = listed[str(logs / "auth.log")]
    assert (auth["kind"], auth["description"], auth["file_count"]) == ("rotations", "SSH and sudo", 3)
    assert auth["newest_modified"] == stamp(BASE + 3 * DAY)
    assert [(f["path"], f["size_bytes"], f["modified"], f["compressed"]) for f in auth["files"]] == [
        (str(logs / "auth.log"), 300, stamp(BASE + 3 * DAY), False),
        (str(logs / "auth.log.1"), 200, stamp(BASE + 2 * DAY), False),
        (str(logs / "auth.log.2.gz"), (logs / "auth.log.2.gz").stat().st_size, stamp(BASE + DAY), True),
    ]
    web = listed[str(logs / "web" / "*.log")]
    assert (web["kind"], web["file_count"], web["newest_modified"]) == ("glob", 2, stamp(BASE + 4 * DAY))
    assert [(f["path"], f["size_bytes"]) for f in web["files"]] == [
        (str(logs / "web" / "new.log"), 20),
        (str(logs / "web" / "old.log"), 10),
    ]
    gone = listed[str(logs / "gone.log")]
    assert (gone["kind"], gone["file_count"], gone["newest_modified"], gone["files"]) == ("file", 0, None, [])
    text = result.content[0].text
    assert text.startswith("3 allowlisted log(s)") and f"{logs / 'auth.log.1'}  200 bytes" in text


async def test_filter_narrows_by_path_description_or_file_name(site: dict[str, Path]) -> None:
    logs = site["logs"]
    async with bastion_client(site["policy"]) as client:
        by_description = (await client.call_tool("list_logs", {"filter": "NGINX"})).structured_content
        by_file = (await client.call_tool("list_logs", {"filter": "old.log"})).structured_content
        by_path_text = (await client.call_tool("list_logs", {"filter": "gone"})).structured_content
        nothing = (await client.call_tool("list_logs", {"filter": "no such log"})).structured_content
    assert list(by_path(by_description)) == [str(logs / "web" / "*.log")]
    assert by_path(by_description)[str(logs / "web" / "*.log")]["file_count"] == 2  # the entry matched: all files
    only_old = by_path(by_file)[str(logs / "web" / "*.log")]
    assert [f["path"] for f in only_old["files"]] == [str(logs / "web" / "old.log")] and only_old["file_count"] == 1
    assert list(by_path(by_path_text)) == [str(logs / "gone.log")]
    assert nothing == {"logs": [], "total_logs": 0, "truncated": False, "notes": []}


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ({"path": "/var/log"}, "unknown argument(s): 'path'; accepted: filter"),
        ({"filter": ""}, f"filter must be a string of 1 to {MAX_FILTER_CHARS} characters"),
        ({"filter": 7}, "filter must be a string"),
        ({"filter": "x" * (MAX_FILTER_CHARS + 1)}, "filter must be a string"),
        ({"filter": "auth\x1b[2J"}, "control characters"),
    ],
)
async def test_arguments_are_validated_and_every_call_audited(
    site: dict[str, Path], arguments: dict[str, Any], needle: str
) -> None:
    async with bastion_client(site["policy"]) as client:
        refused = await client.call_tool("list_logs", arguments)
        listed = await client.call_tool("list_logs", None)
    assert refused.is_error and needle in refused.content[0].text
    assert not listed.is_error and listed.structured_content["total_logs"] == 3
    records = [r for r in read_audit(site["audit"]) if r.get("tool") == "list_logs"]
    assert [(r["event"], r.get("outcome")) for r in records] == [
        ("begin", None),
        ("end", "invalid"),
        ("begin", None),
        ("end", "ok"),
    ]
    assert records[1]["arguments"] == arguments


async def test_is_rate_limited_like_every_tool(tmp_path: Path) -> None:
    log = put(tmp_path / "a.log", b"x\n", BASE)
    policy = write_policy(tmp_path, [log], toml="[rate_limit.tools.list_logs]\ncalls = 1\nwindow_s = 60\n")
    async with bastion_client(policy) as client:
        first = await client.call_tool("list_logs", {})
        second = await client.call_tool("list_logs", {})
        other = await client.call_tool("query_logs", {"log_path": str(log), "pattern": "x"})
    assert not first.is_error and not other.is_error
    assert second.is_error and second.content[0].text.startswith("rate limited for this client")
    ends = [r["outcome"] for r in read_audit(tmp_path / "audit.jsonl") if r["event"] == "end"]
    assert ends == ["ok", "denied_rate", "ok"]


async def test_symlinks_and_hard_links_are_never_listed_nor_followed(site: dict[str, Path]) -> None:
    """A planted link in the glob's directory, or in place of a rotation, shows nothing of its
    target: not its name, not its size, not its time."""
    logs = site["logs"]
    (logs / "web" / "evil.log").symlink_to(site["outside"])
    (logs / "auth.log.3").symlink_to(site["outside"])
    os.link(site["outside"], logs / "web" / "linked.log")
    async with bastion_client(site["policy"]) as client:
        result = await client.call_tool("list_logs", {})
    listed = by_path(result.structured_content)
    names = [f["path"] for log in listed.values() for f in log["files"]]
    assert not any(name.endswith(("evil.log", "linked.log", "auth.log.3")) for name in names)
    assert listed[str(logs / "web" / "*.log")]["file_count"] == 2
    assert listed[str(logs / "auth.log")]["file_count"] == 3
    assert "777" not in result.content[0].text and stamp(BASE + 9 * DAY) not in result.content[0].text


async def test_a_file_replaced_by_a_symlink_is_not_stated_through_it(site: dict[str, Path]) -> None:
    """The literal file itself swapped for a link to another file after start-up: the listing
    opens it without following links, so it is simply not there."""
    logs = site["logs"]
    async with bastion_client(site["policy"]) as client:
        (logs / "auth.log").unlink()
        (logs / "auth.log").symlink_to(site["outside"])
        result = await client.call_tool("list_logs", {"filter": "SSH"})
    auth = by_path(result.structured_content)[str(logs / "auth.log")]
    assert [f["path"] for f in auth["files"]] == [str(logs / "auth.log.1"), str(logs / "auth.log.2.gz")]
    assert auth["newest_modified"] == stamp(BASE + 2 * DAY)


async def test_files_and_entries_are_bounded(tmp_path: Path) -> None:
    glob_dir = tmp_path / "hosts"
    for n in range(FILES_SHOWN + 3):
        put(glob_dir / f"h{n:02d}.log", b"x" * n, BASE + n * 60)
    entries: list[str | Path | dict[str, Any]] = [glob_dir / "*.log"]
    entries += [tmp_path / f"missing{n}.log" for n in range(MAX_LOGS)]
    policy = write_policy(tmp_path, entries)
    async with bastion_client(policy) as client:
        result = await client.call_tool("list_logs", {})
    structured = result.structured_content
    assert structured["total_logs"] == MAX_LOGS + 1 and len(structured["logs"]) == MAX_LOGS
    assert structured["truncated"] is True and structured["notes"] == [
        "1 more log(s) not listed: narrow them with filter"
    ]
    hosts = structured["logs"][0]
    assert hosts["file_count"] == FILES_SHOWN + 3 and len(hosts["files"]) == FILES_SHOWN
    assert hosts["files"][0]["path"] == str(glob_dir / f"h{FILES_SHOWN + 2:02d}.log")  # newest first
    assert hosts["newest_modified"] == stamp(BASE + (FILES_SHOWN + 2) * 60)


# --- where the model sees the allowlist without list_logs -----------------------------


async def test_log_path_schema_shows_the_entries(tmp_path: Path) -> None:
    a, b = put(tmp_path / "a.log", b"x\n", BASE), put(tmp_path / "b.log", b"x\n", BASE)
    exact = write_policy(tmp_path, [a, b])
    async with bastion_client(exact) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert tools["query_logs"].input_schema["properties"]["log_path"]["enum"] == [str(a), str(b)]
    rotated = write_policy(tmp_path, [{"path": str(a), "rotations": True}, tmp_path / "*.txt"])
    async with bastion_client(rotated) as client:
        log_path = {t.name: t for t in (await client.list_tools()).tools}["query_logs"].input_schema["properties"][
            "log_path"
        ]
    assert log_path["examples"] == [str(a), str(tmp_path / "*.txt")] and "enum" not in log_path


async def test_a_wrong_path_is_refused_with_the_closest_allowlisted_paths(site: dict[str, Path]) -> None:
    logs = site["logs"]
    entries = {str(logs / "auth.log"), str(logs / "web" / "*.log"), str(logs / "gone.log")}
    async with bastion_client(site["policy"]) as client:
        typo = await client.call_tool("query_logs", {"log_path": str(logs / "auth.lgo"), "pattern": "a"})
        named = typo.content[0].text.partition(CLOSEST_HINT)[2].split(", ")
        followed = await client.call_tool("query_logs", {"log_path": named[0], "pattern": "a", "max_lines": 1})
        far = await client.call_tool("query_logs", {"log_path": "/etc/shadow", "pattern": "x"})
    assert typo.is_error and typo.content[0].text.startswith(NOT_ALLOWED + CLOSEST_HINT)
    assert named[0] == str(logs / "auth.log") and len(named) <= 3 and set(named) <= entries
    assert not followed.is_error  # the hint leads to a path that works
    assert far.is_error and far.content[0].text == NOT_ALLOWED


async def test_an_entry_named_twice_is_listed_once(tmp_path: Path) -> None:
    log = put(tmp_path / "a.log", b"x\n", BASE)
    policy = write_policy(
        tmp_path, [{"path": str(log), "description": "first"}, {"path": str(log), "description": "2nd"}]
    )
    async with bastion_client(policy) as client:
        result = await client.call_tool("list_logs", {})
    assert [(log["log_path"], log["description"]) for log in result.structured_content["logs"]] == [(str(log), "first")]
