"""[[journals]] around the tool: the policy's rules for sources, which files a source
covers (broker/files/journal_files.py), and the surfaces that show sources: scopes,
list_logs, journal:// resources, the prompts, the worker kinds and reload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from broker import scopes
from broker.cli import preflight
from broker.errors import ToolError
from broker.files import log_dir_modes
from broker.files.allowlist import Allowlist
from broker.policy import Policy, PolicyError, load_policy, parse_policy
from broker.policy_generation import restart_needed
from broker.sandbox.host import kinds_for
from broker.tools import prompts
from broker.tools.query_journal.resource import journal_uri, source_of
from tests import journal_fixtures as fixtures
from tests.conftest import bastion_client, write_policy

needs_tools = pytest.mark.skipif(
    not fixtures.JOURNAL_REMOTE.exists() or shutil.which("journalctl") is None,
    reason="needs systemd-journal-remote and journalctl (make deps)",
)
MACHINE = "0123456789abcdef0123456789abcdef"


def _policy_text(tmp_path: Path, journals: str, extra: str = "") -> bytes:
    return f'[audit]\npath = "{tmp_path}/audit.jsonl"\n{journals}\n{extra}'.encode()


def _parse(tmp_path: Path, journals: str, extra: str = "") -> Policy:
    return parse_policy(_policy_text(tmp_path, journals, extra), tmp_path)


# --- the policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("journals", "error"),
    [
        ('[[journals]]\nname = "a"\npath = "j"\n[[journals]]\nname = "a"\npath = "k"\n', "journals: entry names"),
        ('[[journals]]\nname = "a"\npath = "j/*.journal"\n', "journals[0].path: a directory or one journal file"),
        ('[[journals]]\nname = "a"\npath = "j"\nunits = []\n', "journals[0].units: an empty list"),
        ('[[journals]]\nname = "a"\npath = "j"\nidentifiers = ["a=b"]\n', "journals[0].identifiers[0]"),
        ('[[journals]]\nname = "a"\npath = "j"\nunits = ["x\\u0007"]\n', "journals[0].units[0]"),
        ('[[journals]]\nname = "a b"\npath = "j"\n', "journals[0].name"),
        ('[[journals]]\npath = "j"\n', "name"),
        ('[[journals]]\nname = "a"\npath = "j"\nhide = true\n', "hide"),
        ("", "logs: at least one [[logs]] or [[journals]] entry is required"),
    ],
)
def test_bad_journal_sources_are_refused_naming_the_key(tmp_path: Path, journals: str, error: str) -> None:
    with pytest.raises(PolicyError) as caught:
        _parse(tmp_path, journals)
    assert error in str(caught.value)


def test_a_policy_may_hold_only_journal_sources(tmp_path: Path) -> None:
    policy = _parse(tmp_path, '[[journals]]\nname = "local"\npath = "journal"\n')
    assert policy.logs == [] and policy.journals[0].path == str(tmp_path / "journal")  # relative to the policy
    assert "journal" in kinds_for(policy)
    assert "journal" not in kinds_for(_parse(tmp_path, f'[[logs]]\npath = "{tmp_path}/a.log"\n'))


def test_a_scope_names_journal_sources_that_exist(tmp_path: Path) -> None:
    source = '[[journals]]\nname = "local"\npath = "j"\n'
    with pytest.raises(PolicyError, match=r"scopes.s.journals\[0\]: unknown 'other'"):
        _parse(tmp_path, source, '[scopes.s]\njournals = ["other"]\n')
    assert _parse(tmp_path, source, '[scopes.s]\njournals = ["local"]\n').scopes["s"].journals == ["local"]


def test_adding_or_changing_a_journal_source_needs_a_restart(tmp_path: Path) -> None:
    one = _parse(tmp_path, '[[journals]]\nname = "local"\npath = "j"\n')
    two = _parse(tmp_path, '[[journals]]\nname = "local"\npath = "k"\n')
    none = _parse(tmp_path, f'[[logs]]\npath = "{tmp_path}/a.log"\n')
    assert restart_needed(one, two) == ["journals"]
    assert "journals" in restart_needed(none, one)
    assert restart_needed(one, one) == []


# --- which files a source covers ------------------------------------------------------------


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_directory_covers_its_journal_files_and_those_one_level_below(tmp_path: Path) -> None:
    root = tmp_path / "journal"
    wanted = [
        _touch(root / "remote-web1.journal"),
        _touch(root / MACHINE / "system.journal"),
        _touch(root / MACHINE / "system@0001-0002.journal~"),
        _touch(root / "remote" / "remote-db1.journal"),
    ]
    _touch(root / "a" / "b" / "deep.journal")  # two levels below: not covered
    _touch(root / MACHINE / "notes.txt")
    _touch(root / ".hidden.journal")  # a wildcard never matches a leading dot
    allowlist = Allowlist(_parse(tmp_path, f'[[journals]]\nname = "local"\npath = "{root}"\n'))
    journals = allowlist.journals
    assert sorted(journals.covered(journals.source("local"))) == sorted(map(str, wanted))
    target = journals.open_search("local")
    try:
        assert sorted(log.path for log in target.files) == sorted(map(str, wanted))
    finally:
        target.close()
        allowlist.close()


def test_a_file_source_covers_that_file_only(tmp_path: Path) -> None:
    file = _touch(tmp_path / "j" / "one.journal")
    _touch(tmp_path / "j" / "two.journal")
    allowlist = Allowlist(_parse(tmp_path, f'[[journals]]\nname = "one"\npath = "{file}"\n'))
    assert allowlist.journals.covered(allowlist.journals.source("one")) == [str(file)]
    allowlist.close()


def test_a_symlinked_source_directory_is_refused_at_load_unless_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    _touch(real / "a.journal")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(PolicyError, match=r"journals\[0\].path: .*symlink"):
        Allowlist(_parse(tmp_path, f'[[journals]]\nname = "l"\npath = "{tmp_path}/link"\n'))
    followed = Allowlist(
        _parse(tmp_path, f'[[journals]]\nname = "l"\npath = "{tmp_path}/link"\nfollow_symlinks = true\n')
    )
    assert followed.journals.covered(followed.journals.source("l")) == [f"{tmp_path}/link/a.journal"]
    followed.close()


def test_a_missing_directory_leaves_the_source_inert_with_a_note(tmp_path: Path) -> None:
    allowlist = Allowlist(_parse(tmp_path, f'[[journals]]\nname = "gone"\npath = "{tmp_path}/gone"\n'))
    assert [note.split(":")[0] for note in allowlist.notes()] == ["gone"]
    with pytest.raises(ToolError, match="^source is allowlisted but no file of it exists right now$"):
        allowlist.journals.open_search("gone")
    allowlist.close()


def test_an_unknown_source_is_refused_without_a_path(tmp_path: Path) -> None:
    allowlist = Allowlist(_parse(tmp_path, f'[[journals]]\nname = "a"\npath = "{tmp_path}"\n'))
    for name in ("b", "", None, 3, "../a", str(tmp_path)):
        with pytest.raises(ToolError) as caught:
            allowlist.journals.open_search(name)
        assert str(tmp_path) not in caught.value.message
    allowlist.close()


def test_a_scope_view_holds_only_its_sources(tmp_path: Path) -> None:
    toml = (
        f'[[journals]]\nname = "a"\npath = "{tmp_path}/a"\n[[journals]]\nname = "b"\npath = "{tmp_path}/b"\n'
        '[stdio]\nscope = "s"\n[scopes.s]\njournals = ["a"]\n'
    )
    policy = _parse(tmp_path, toml)
    full = Allowlist(policy)
    scope = scopes.of(policy, None)
    view = scope.allowlist(full)
    assert list(view.journals.sources) == ["a"] and [s.name for s in scope.policy(policy).journals] == ["a"]
    with pytest.raises(ToolError):
        view.journals.source("b")
    view.close()  # a view leaves the descriptors to the allowlist that pinned them
    assert full.journals.source("b").pins[0].dirfd is not None or not (tmp_path / "b").exists()
    full.close()


# --- the resource URI, the prompts ------------------------------------------------------------


@pytest.mark.parametrize("name", ["local", "web.prod", "a@b", "x-1_2"])
def test_a_journal_uri_names_its_source_back(name: str) -> None:
    assert source_of(journal_uri(name)) == name


@pytest.mark.parametrize("uri", ["journal://", "journal://a/b", "journal://a?x", "file://a", "journal:///a"])
def test_other_uris_are_not_journal_sources(uri: str) -> None:
    with pytest.raises(ToolError):
        source_of(uri)


def test_the_prompts_send_the_assistant_to_the_journal_sources() -> None:
    assert "query_journal" not in prompts.analyze_incident("INC-1", False, [])
    text = prompts.analyze_incident("INC-1", False, ["local", "fleet"])
    assert "query_journal (source: local, fleet)" in text and "journal source" in text
    triage = prompts.triage_auth_failures(None, None, False, ["local"])
    assert "query_journal source=local" in triage and "identifier=sshd" in triage and "query_logs" not in triage
    both = prompts.triage_auth_failures("/var/log/auth.log", None, False, ["local"])
    assert "query_logs log_path=/var/log/auth.log" in both and "query_journal (source: local)" in both


# --- over stdio: list_logs, resources, prompts, a scope without journals ----------------------


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sources") / "collector"
    directory.mkdir()
    for index, host in enumerate(("web1", "db1")):
        fixtures.write_journal(directory / f"remote-{host}.journal", fixtures.host_entries(host, index, 60, hosts=2))
    return directory


def _served_policy(tmp_path: Path, collector: Path, extra: str = "") -> Path:
    (tmp_path / "auth.log").write_text("Nov 24 08:00:00 h sshd[1]: Failed password for root from 192.0.2.1\n")
    source = f'[[journals]]\nname = "fleet"\npath = "{collector}"\ndescription = "two hosts"\n'
    return write_policy(tmp_path, [tmp_path / "auth.log"], toml=source + extra)


@needs_tools
@pytest.mark.anyio
async def test_list_logs_resources_and_prompts_show_the_source(tmp_path: Path, collector: Path) -> None:
    async with bastion_client(_served_policy(tmp_path, collector)) as client:
        listed = (await client.call_tool("list_logs", {})).structured_content
        assert listed is not None
        (journal,) = [log for log in listed["logs"] if log["kind"] == "journal"]
        assert journal["log_path"] == "fleet" and journal["description"] == "two hosts"
        assert journal["file_count"] == 2 and {Path(f["path"]).name for f in journal["files"]} == {
            "remote-web1.journal",
            "remote-db1.journal",
        }
        filtered = (await client.call_tool("list_logs", {"filter": "db1"})).structured_content
        assert filtered is not None and [f["path"] for f in filtered["logs"][0]["files"]] == [
            str(collector / "remote-db1.journal")
        ]
        resources = {str(resource.uri): resource for resource in (await client.list_resources()).resources}
        assert "journal://fleet" in resources
        text = (await client.read_resource("journal://fleet")).contents[0].text  # type: ignore[union-attr]
        lines = text.splitlines()
        assert len(lines) == 120 and lines == sorted(lines)  # every entry, oldest first (times lead each line)
        prompt = await client.get_prompt("analyze_incident", {"incident_id": "INC-7"})
        assert "query_journal (source: fleet)" in prompt.messages[0].content.text  # type: ignore[union-attr]


@needs_tools
@pytest.mark.anyio
async def test_a_scope_without_journal_sources_has_no_query_journal(tmp_path: Path, collector: Path) -> None:
    scope = '[stdio]\nscope = "logs_only"\n[scopes.logs_only]\njournals = []\n'
    async with bastion_client(_served_policy(tmp_path, collector, scope)) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert "query_journal" not in names and "query_logs" in names
        with pytest.raises(MCPError, match="unknown tool"):  # as a tool that does not exist
            await client.call_tool("query_journal", {"source": "fleet", "pattern": "."})
        listed = (await client.call_tool("list_logs", {})).structured_content
        assert listed is not None and all(log["kind"] != "journal" for log in listed["logs"])
        assert all(not str(r.uri).startswith("journal:") for r in (await client.list_resources()).resources)
        with pytest.raises(MCPError):
            await client.read_resource("journal://fleet")


def test_load_policy_resolves_a_source_beside_the_policy(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_bytes(_policy_text(tmp_path, '[[journals]]\nname = "s"\npath = "j/one.journal"\n'))
    assert load_policy(policy).journals[0].path == os.path.join(str(tmp_path), "j", "one.journal")


def test_preflight_names_inert_and_empty_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    toml = (
        f'[[journals]]\nname = "gone"\npath = "{tmp_path}/gone"\n'
        f'[[journals]]\nname = "empty"\npath = "{tmp_path}/empty"\n'
    )
    policy = _parse(tmp_path, toml)
    found = {f.subject: f for f in preflight.check(policy) if f.subject.startswith("journals")}
    assert "gone: not served until a restart" in found["journals[0].path"].message
    assert "empty: no journal file there right now" in found["journals[1].path"].message
    assert not any(f.refuses for f in found.values())
    monkeypatch.setattr(preflight.ctypes.util, "find_library", lambda name: None)
    (missing,) = [f for f in preflight.check(policy) if f.subject == "journals"]
    assert missing.refuses and "libsystemd0" in missing.message  # no journal worker could start: refuse


def test_who_else_can_change_a_journal_source_is_reported(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    _touch(remote / "remote-web1.journal")
    os.chown(remote, 65534, 65534)  # as systemd-journal-remote owns its output directory
    allowlist = Allowlist(_parse(tmp_path, f'[[journals]]\nname = "fleet"\npath = "{remote}"\n'))
    lines = log_dir_modes.report(log_dir_modes.find(allowlist, frozenset({0})))
    allowlist.close()
    assert any(line.startswith("journal source fleet: uid 65534") and str(remote) in line for line in lines), lines
