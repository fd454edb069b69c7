"""query_journal end to end over stdio: a real `bastion serve`, journal files written by
the real systemd-journal-remote (tests/journal_fixtures.py), and every answer compared
with what `journalctl -D DIR -g PATTERN` finds in the same files.

One server per policy, started once for the module, takes every call (a blocking
portal runs the SDK client in its own event loop thread, so the tests stay plain).
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import Client
from mcp.shared.exceptions import MCPError

from bastion_wire.protocol import MAX_JOURNAL_FILES, JournalRequest
from broker.files.opened_files import SearchTarget
from broker.tools.query_journal import search as journal_search
from broker.tools.query_journal.tool import OUTPUT_SCHEMA
from tests import journal_fixtures as fixtures
from tests.conftest import bastion_client, read_audit, write_policy
from tests.test_journal_worker import Row, journalctl, rows

pytestmark = pytest.mark.skipif(
    not fixtures.JOURNAL_REMOTE.exists() or shutil.which("journalctl") is None,
    reason="needs systemd-journal-remote and journalctl (make deps)",
)
FAILED = "Failed password"
MACHINE_ID = "4a1e5c0d9b8f47e6a3c2b1d0e9f8a7b6"
LOCAL_HOST = "bastion1"
COLLECTOR_HOSTS = 210  # more than three batches of MAX_JOURNAL_FILES
MAX_LINES = 500  # the policy's [limits] max_lines
GLOB_FILES = 100  # a policy's max_glob_files, fewer than the collector's files
ODD_HOST = "in\\x1b[2Jside\\x0afake"  # the hostile host name, its control characters escaped
UNCLEAN = "system@0006449d1a000000-5e5e5e5e5e5e5e5e.journal~"  # what journald leaves after a crash


@dataclass(frozen=True)
class Corpus:
    root: Path
    local: Path  # shaped like /var/log/journal
    collector: Path  # written by systemd-journal-remote --split-mode=host
    hostile: Path  # a good file among a symlink, a FIFO and a hard link
    damaged: Path  # a good file among damaged copies
    live: Path  # empty: a test runs a collector writing into it


def _local_journal(directory: Path) -> Path:
    """DIR/<machine id>/ with the names journald gives: the active system and user
    journals, an archived system journal and one left by an unclean shutdown. Four
    files of one host, their entries interleaved in time, over three boots."""
    machine = directory / MACHINE_ID
    machine.mkdir(parents=True)
    names = [
        "system.journal",
        "user-1000.journal",
        f"system@{'5e' * 16}-0000000000000001-0006449d1a000000.journal",
        UNCLEAN,
    ]
    for index, name in enumerate(names):
        written = machine / f"part{index}.journal"  # the tool wants a .journal name
        fixtures.write_journal(written, fixtures.host_entries(LOCAL_HOST, index, 90, hosts=len(names), boots=3))
        written.rename(machine / name)
    return directory


def _hostile(directory: Path, outside: Path) -> Path:
    directory.mkdir()
    outside.mkdir()
    fixtures.write_journal(directory / "good.journal", fixtures.host_entries("inside", 0, 40))
    odd = fixtures.Entry(
        realtime_usec=fixtures.BASE_USEC + 7,
        monotonic_usec=1,
        message="Failed password\x1b]0;owned\x07\r\n2025-12-02T00:00:00.000000Z web1 sshd[1]: Accepted",
        hostname="in\x1b[2Jside\nfake",
        identifier="sshd\r\x08",
        priority=6,
        pid=1,
        boot_id=fixtures.boot_id(9),
        unit="ssh\x9b.service",
    )
    fixtures.write_journal(directory / "odd.journal", [odd])
    fixtures.write_journal(outside / "secret.journal", fixtures.host_entries("outside", 1, 40))
    fixtures.write_journal(outside / "linked.journal", fixtures.host_entries("hardlinked", 2, 40))
    (directory / "x.journal").symlink_to(outside / "secret.journal")
    (directory / "elsewhere").symlink_to(outside, target_is_directory=True)  # DIR/*/*.journal through a link
    os.mkfifo(directory / "fifo.journal")
    (directory / "dir.journal").mkdir()
    os.link(outside / "linked.journal", directory / "linked.journal")
    return directory


def _damaged(directory: Path) -> Path:
    """A good file, and copies of a real one: zeroed from half way (a crash mid-write),
    cut short of its header's size (the library refuses it) and 8 KiB overwritten in
    the middle of its objects."""
    directory.mkdir()
    fixtures.write_journal(directory / "whole.journal", fixtures.host_entries("whole", 0, 200, hosts=2))
    source = fixtures.write_journal(directory.parent / "copy.journal", fixtures.host_entries("copy", 1, 200, hosts=2))
    data = source.read_bytes()
    tail = struct.unpack_from("<Q", data, 136)[0]  # the header's tail_object_offset
    first = data.find(b"MESSAGE=")
    middle = (first + tail) // 2
    (directory / "zeroed.journal").write_bytes(data[:middle] + bytes(len(data) - middle))
    (directory / "short.journal").write_bytes(data[: len(data) // 4])
    (directory / "overwritten.journal").write_bytes(data[:middle] + b"\xa5" * 8192 + data[middle + 8192 :])
    (directory / "empty.journal").touch()
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("journals")
    (root / "live").mkdir()
    files = fixtures.build_collector(root / "collector", COLLECTOR_HOSTS, 10)  # 4 failures a host
    for index, path in enumerate(files):  # modified in host order: the newest files are the last hosts'
        os.utime(path, (fixtures.BASE_USEC / 1e6 + index, fixtures.BASE_USEC / 1e6 + index))
    return Corpus(
        root=root,
        local=_local_journal(root / "local"),
        collector=root / "collector",
        hostile=_hostile(root / "hostile", root / "outside"),
        damaged=_damaged(root / "damaged"),
        live=root / "live",
    )


def _sources(corpus: Corpus) -> str:
    tables = [
        ("local", corpus.local, ""),
        ("collector", corpus.collector, ""),
        ("ssh_only", corpus.local, 'units = ["ssh.service"]\n'),
        ("sshd_sudo", corpus.local, 'identifiers = ["sshd", "sudo"]\n'),
        ("hostile", corpus.hostile, ""),
        ("damaged", corpus.damaged, ""),
        ("live", corpus.live, ""),
        ("one_file", corpus.local / MACHINE_ID / "system.journal", ""),
        ("unclean", corpus.local / MACHINE_ID / UNCLEAN, ""),
        ("relative", Path("..") / corpus.local.name, ""),  # against the policy's directory, a sibling
    ]
    return "".join(f'[[journals]]\nname = "{name}"\npath = "{path}"\n{extra}\n' for name, path, extra in tables)


@dataclass
class Session:
    portal: BlockingPortal
    client: Client
    audit: Path

    def call(self, **arguments: Any) -> types.CallToolResult:
        result: types.CallToolResult = self.portal.call(self.client.call_tool, "query_journal", arguments)
        return result

    def ok(self, **arguments: Any) -> dict[str, Any]:
        result = self.call(**arguments)
        assert not result.is_error, result.content
        assert isinstance(result.structured_content, dict)
        return result.structured_content


@contextmanager
def serving(policy: Path) -> Iterator[Session]:
    with start_blocking_portal("asyncio") as portal, portal.wrap_async_context_manager(bastion_client(policy)) as c:
        yield Session(portal, c, policy.parent / "audit.jsonl")


def _policy(directory: Path, toml: str, **limits: Any) -> Path:
    directory.mkdir()
    log = directory / "app.log"
    log.write_text("a plain log, so the policy has one\n")
    return write_policy(directory, [log], toml=toml, **limits)


@pytest.fixture(scope="module")
def server(corpus: Corpus) -> Iterator[Session]:
    with serving(_policy(corpus.root / "main", _sources(corpus), max_lines=MAX_LINES)) as session:
        yield session


@pytest.fixture(scope="module")
def capped(corpus: Corpus) -> Iterator[Session]:
    """The same sources with an output cap of a few entries."""
    with serving(_policy(corpus.root / "capped", _sources(corpus), max_lines=MAX_LINES, max_output_bytes=4096)) as s:
        yield s


def tool_rows(structured: dict[str, Any]) -> list[Row]:
    found = []
    for line in structured["lines"]:
        seconds = datetime.strptime(line["time"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        found.append((int(seconds) * 1_000_000 + int(line["time"][20:26]), line["host"], line["message"]))
    return found


def in_dir(directory: Path, pattern: str, *args: str, case: str = "true") -> list[dict[str, Any]]:
    """What journalctl -D DIR -g PATTERN finds (every journal file beneath DIR)."""
    return journalctl([], pattern, "-D", str(directory), *args, case=case)


def no_path_in(text: str, corpus: Corpus) -> bool:
    return str(corpus.root) not in text and "/tmp" not in text and "/var" not in text


# --- a local journal directory --------------------------------------------------------


def test_failed_password_in_a_local_journal_equals_journalctl(server: Session, corpus: Corpus) -> None:
    expected = in_dir(corpus.local, FAILED)
    assert len(expected) == 4 * 36  # 90 entries a file, four kinds of ten are failures
    found = server.ok(source="local", pattern=FAILED, max_lines=MAX_LINES)
    assert tool_rows(found) == rows(expected)
    assert found["files"] == 4 and found["notes"] == [] and found["truncated"] is False
    assert {line["host"] for line in found["lines"]} == {LOCAL_HOST}
    first = found["lines"][0]
    assert (first["unit"], first["identifier"], first["priority"]) == ("ssh.service", "sshd", 6)
    assert first["pid"] == int(expected[0]["_PID"])


def test_the_text_content_names_each_entry(server: Session) -> None:
    result = server.call(source="local", pattern="for root", max_lines=3)
    assert isinstance(result.content[0], types.TextContent) and isinstance(result.structured_content, dict)
    head, *lines = result.content[0].text.splitlines()
    assert head == "3 matching entries in local (4 journal file(s)) (stopped at max_lines; more matches exist)"
    assert lines == [
        f"{line['time']} {LOCAL_HOST} sshd[{line['pid']}]: {line['message']}"
        for line in result.structured_content["lines"]
    ]
    assert result.structured_content["truncated_reason"] == "max_lines"


@pytest.mark.parametrize(
    ("source", "path"),
    [("one_file", f"{MACHINE_ID}/system.journal"), ("unclean", f"{MACHINE_ID}/{UNCLEAN}"), ("relative", "")],
)
def test_a_file_source_and_a_relative_path_equal_journalctl(
    server: Session, corpus: Corpus, source: str, path: str
) -> None:
    target = corpus.local / path
    expected = rows(journalctl([target], FAILED) if path else in_dir(target, FAILED))
    found = server.ok(source=source, pattern=FAILED, max_lines=MAX_LINES)
    assert expected and tool_rows(found) == expected
    assert found["files"] == (1 if path else 4)


# --- a collector directory ------------------------------------------------------------


def test_count_only_per_host_equals_journalctl_over_every_batch(server: Session, corpus: Corpus) -> None:
    expected = Counter(entry["_HOSTNAME"] for entry in in_dir(corpus.collector, FAILED))
    assert len(expected) == COLLECTOR_HOSTS > 3 * MAX_JOURNAL_FILES
    found = server.ok(source="collector", pattern=FAILED, count_only=True)
    assert {host["host"]: host["matches"] for host in found["hosts"]} == dict(expected)
    assert found["total_matches"] == sum(expected.values()) and found["lines"] == []
    assert found["files"] == COLLECTOR_HOSTS and found["truncated"] is False


@pytest.mark.parametrize(("order", "reverse"), [("oldest_first", []), ("newest_first", ["--reverse"])])
@pytest.mark.parametrize("max_lines", [1, 37, MAX_LINES])
def test_max_lines_are_the_first_in_time_over_every_batch(
    server: Session, corpus: Corpus, order: str, reverse: list[str], max_lines: int
) -> None:
    # Each batch of 64 files answers its own first max_lines; only a merge of all of them
    # gives the first max_lines of the whole directory.
    expected = rows(in_dir(corpus.collector, FAILED, *reverse))
    assert len(expected) > max_lines
    found = server.ok(source="collector", pattern=FAILED, max_lines=max_lines, order=order)
    assert tool_rows(found) == expected[:max_lines]
    assert found["truncated_reason"] == "max_lines" and found["files"] == COLLECTOR_HOSTS


def test_a_search_that_finds_everything_is_the_whole_merge(server: Session, corpus: Corpus) -> None:
    expected = rows(in_dir(corpus.collector, "for root from"))
    assert MAX_JOURNAL_FILES < len(expected) <= MAX_LINES
    found = server.ok(source="collector", pattern="for root from", max_lines=MAX_LINES)
    assert tool_rows(found) == expected and found["truncated"] is False


def test_a_running_collector_s_open_files_equal_journalctl(server: Session, corpus: Corpus) -> None:
    # The collector never closes its files: they are searched while it writes them.
    refused = server.call(source="live", pattern=FAILED)
    assert refused.is_error and "no file of it exists" in _text(refused)
    with fixtures.Collector(corpus.live) as collector:
        for index in range(3):
            collector.send(index, fixtures.host_entries(f"live-{index}", index, 30, hosts=4))
        first = server.ok(source="live", pattern=FAILED, max_lines=MAX_LINES)
        assert tool_rows(first) == rows(in_dir(corpus.live, FAILED)) and first["files"] == 3
        with collector.connect(3) as conn:  # a fourth host, its upload still open
            collector.upload(conn, fixtures.host_entries("live-3", 3, 30, hosts=4))
            deadline = time.monotonic() + 10
            while len(in_dir(corpus.live, FAILED)) < 4 * 12 and time.monotonic() < deadline:
                time.sleep(0.05)
            now = server.ok(source="live", pattern=FAILED, max_lines=MAX_LINES)
            assert tool_rows(now) == rows(in_dir(corpus.live, FAILED)) and len(now["lines"]) == 4 * 12
            fixtures.finish(conn)


# --- each filter against journalctl's own ----------------------------------------------


@pytest.mark.parametrize(
    ("source", "pattern", "arguments", "args"),
    [
        ("local", ".", {"unit": "ssh"}, ["-u", "ssh.service"]),
        ("local", "[0-9]", {"unit": "cron.service"}, ["_SYSTEMD_UNIT=cron.service"]),
        ("local", ".", {"identifier": "sudo"}, ["-t", "sudo"]),
        ("collector", FAILED, {"hostname": "host-137"}, ["_HOSTNAME=host-137"]),
        ("local", "error", {"boot": fixtures.boot_id(2, 1)}, ["-b", fixtures.boot_id(2, 1)]),
        ("local", ".", {"boot": fixtures.boot_id(0, 2)}, [f"_BOOT_ID={fixtures.boot_id(0, 2)}"]),
        ("local", ".", {"priority": "err"}, ["-p", "err"]),
        ("collector", ".", {"until": "2025-12-02T00:00:00Z"}, []),  # the first entry's very time: inclusive
        ("collector", ".", {"since": "2025-12-02T00:34:59Z"}, []),  # the last ones
        ("local", ".", {"priority": "4"}, ["-p", "4"]),
        ("local", FAILED, {"since": "2025-12-02T00:01:00Z", "until": "2025-12-02T00:04:00Z"}, []),
        ("collector", "invalid user", {"since": "2025-12-02T00:10:00Z", "order": "newest_first"}, ["-r"]),
        (
            "local",
            ".",
            {"identifier": "sshd", "priority": "info", "order": "newest_first"},
            ["-t", "sshd", "-p", "6", "-r"],
        ),
    ],
)
def test_filters_equal_journalctl(
    server: Session, corpus: Corpus, source: str, pattern: str, arguments: dict[str, Any], args: list[str]
) -> None:
    window = [f"--{name}={arguments[name][:19].replace('T', ' ')}" for name in ("since", "until") if name in arguments]
    expected = rows(in_dir(getattr(corpus, source), pattern, *args, *window))
    found = server.ok(source=source, pattern=pattern, max_lines=MAX_LINES, **arguments)
    assert expected and len(expected) < MAX_LINES
    assert tool_rows(found) == expected and found["truncated"] is False


def test_ignore_case_equals_journalctl(server: Session, corpus: Corpus) -> None:
    pattern = "failed PASSWORD for ROOT"
    expected = rows(in_dir(corpus.local, pattern, case="false"))
    assert expected and server.ok(source="local", pattern=pattern)["lines"] == []
    assert tool_rows(server.ok(source="local", pattern=pattern, ignore_case=True, max_lines=MAX_LINES)) == expected


# --- a source's restrictions ----------------------------------------------------------


def test_a_unit_restriction_hides_every_other_unit(server: Session, corpus: Corpus) -> None:
    expected = rows(in_dir(corpus.local, ".", "_SYSTEMD_UNIT=ssh.service"))
    found = server.ok(source="ssh_only", pattern=".", max_lines=MAX_LINES)
    assert expected and tool_rows(found) == expected
    assert {line["unit"] for line in found["lines"]} == {"ssh.service"}
    assert tool_rows(server.ok(source="ssh_only", pattern=".", unit="ssh", max_lines=MAX_LINES)) == expected
    refused = server.call(source="ssh_only", pattern=".", unit="cron")
    assert refused.is_error and "not readable in this source" in _text(refused)


def test_an_identifier_restriction_hides_the_others_and_narrows(server: Session, corpus: Corpus) -> None:
    both = rows(in_dir(corpus.local, ".", "-t", "sshd", "-t", "sudo"))
    found = server.ok(source="sshd_sudo", pattern=".", max_lines=MAX_LINES)
    assert both and tool_rows(found) == both
    assert {line["identifier"] for line in found["lines"]} == {"sshd", "sudo"}
    sudo = server.ok(source="sshd_sudo", pattern=".", identifier="sudo", max_lines=MAX_LINES)
    assert tool_rows(sudo) == rows(in_dir(corpus.local, ".", "-t", "sudo")) and len(sudo["lines"]) < len(both)
    counted = server.ok(source="sshd_sudo", pattern="Out of memory", count_only=True)
    assert counted["total_matches"] == 0  # the kernel's lines are outside the restriction
    refused = server.call(source="sshd_sudo", pattern=".", identifier="kernel")
    assert refused.is_error and "not readable in this source" in _text(refused)


# --- refusals -------------------------------------------------------------------------


def _text(result: types.CallToolResult) -> str:
    return "\n".join(part.text for part in result.content if isinstance(part, types.TextContent))


@pytest.mark.parametrize(
    "arguments",
    [
        {"source": "nope"},
        {"source": "../local"},
        {"pattern": "(a)\\1"},
        {"pattern": "(unclosed"},
        {"boot": "xyz"},
        {"boot": "A" * 32},
        {"priority": "loud"},
        {"priority": 8},
        {"unit": "ssh=1"},
        {"unit": "ssh\n.service"},
        {"identifier": "\x1b[31m"},
        {"hostname": "h" * 300},
        {"max_lines": MAX_LINES + 1},
        {"max_lines": 0},
        {"order": "random"},
        {"since": "yesterday"},
        {"count_only": "yes"},
        {"file": "/etc/shadow"},
    ],
)
def test_bad_arguments_are_tool_errors_naming_no_path(
    server: Session, corpus: Corpus, arguments: dict[str, Any]
) -> None:
    result = server.call(**({"source": "local", "pattern": FAILED} | arguments))
    assert result.is_error and result.structured_content is None
    text = _text(result)
    assert text and no_path_in(text, corpus)


def test_the_tool_is_absent_without_journal_sources(corpus: Corpus) -> None:
    with serving(_policy(corpus.root / "plain", "")) as session:
        names = [tool.name for tool in session.portal.call(session.client.list_tools).tools]
        assert "query_logs" in names and "query_journal" not in names
        with pytest.raises(MCPError, match="unknown tool") as refused:
            session.call(source="local", pattern=FAILED)
        assert no_path_in(str(refused.value), corpus)


# --- hostile and damaged files ------------------------------------------------------------


def test_a_symlink_a_fifo_and_a_hard_link_are_skipped_unread(server: Session, corpus: Corpus) -> None:
    started = time.monotonic()
    found = server.ok(source="hostile", pattern=".", max_lines=MAX_LINES)
    assert time.monotonic() - started < 10  # the FIFO was never read
    assert [row for row in tool_rows(found) if row[1] == "inside"] == rows(
        in_dir(corpus.hostile, ".", "_HOSTNAME=inside")
    )
    assert {line["host"] for line in found["lines"]} == {"inside", ODD_HOST}  # nothing of outside/ was read
    assert found["files"] == 2
    notes = "\n".join(found["notes"])
    assert "x.journal skipped: it is a symlink" in notes
    assert "fifo.journal skipped: it is not a regular file" in notes
    assert "linked.journal skipped: it has more than one name" in notes
    assert "dir.journal skipped: it is not a regular file" in notes
    assert no_path_in(notes, corpus)


def test_control_characters_in_every_field_are_escaped(server: Session) -> None:
    result = server.call(source="hostile", pattern="owned", max_lines=5)
    assert isinstance(result.structured_content, dict)
    (line,) = result.structured_content["lines"]
    fields = [line["host"], line["identifier"], line["unit"], line["message"]]
    assert line["host"] == ODD_HOST and all(char.isprintable() for field in fields for char in field)
    text = _text(result)
    entries = [row for row in text.splitlines() if not row.startswith("note: ")]  # the notes follow, a line each
    assert len(entries) == 2 and entries[1].startswith("2025-12-02T00:00:00.000007Z in\\x1b[2Jside\\x0afake sshd")
    assert all(char.isprintable() or char == "\n" for char in text)


def test_damaged_files_give_results_and_notes(server: Session, corpus: Corpus) -> None:
    found = server.ok(source="damaged", pattern=FAILED, max_lines=MAX_LINES)
    # journalctl -D reads the same files as the library does (it is the library): the
    # short file refused, the damaged ones up to the damage, the copies' shared entries once.
    expected = rows(in_dir(corpus.damaged, FAILED))
    assert tool_rows(found) == expected
    hosts = Counter(line["host"] for line in found["lines"])
    assert hosts["whole"] == 80 and 0 < hosts["copy"] < 80  # the good file whole, the copies in part
    notes = "\n".join(found["notes"])
    assert "short.journal could not be opened" in notes
    assert "damaged part-way" in notes
    assert "empty.journal could not be opened" in notes
    assert found["files"] == 5 and no_path_in(notes, corpus)
    # The same call again: the server is still there.
    assert server.ok(source="damaged", pattern=FAILED, count_only=True)["total_matches"] == len(found["lines"])


# --- outputs and the audit ------------------------------------------------------------------


def test_structured_content_validates_against_the_output_schema(server: Session) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    listed = {tool.name: tool for tool in server.portal.call(server.client.list_tools).tools}
    assert listed["query_journal"].output_schema == OUTPUT_SCHEMA
    for arguments in ({"pattern": FAILED, "max_lines": 5}, {"pattern": "x", "count_only": True}):
        jsonschema.validate(server.ok(source="collector", **arguments), OUTPUT_SCHEMA)
    jsonschema.validate(server.ok(source="hostile", pattern="."), OUTPUT_SCHEMA)


@pytest.mark.parametrize(("order", "reverse"), [("oldest_first", []), ("newest_first", ["--reverse"])])
def test_the_output_cap_keeps_the_first_in_time_over_every_batch(
    capped: Session, corpus: Corpus, order: str, reverse: list[str]
) -> None:
    # The batches are taken oldest file first; the newest entries of the collector are in
    # its last batch: what fits the cap must still be the first in the order asked for.
    found = capped.ok(source="collector", pattern=FAILED, max_lines=MAX_LINES, order=order)
    assert found["truncated"] is True and found["truncated_reason"] == "max_output_bytes"
    expected = rows(in_dir(corpus.collector, FAILED, *reverse))
    assert 0 < len(found["lines"]) < len(expected) and tool_rows(found) == expected[: len(found["lines"])]
    assert found["files"] == COLLECTOR_HOSTS


def test_beyond_max_glob_files_the_oldest_files_are_left_out(corpus: Corpus) -> None:
    policy = _policy(corpus.root / "globbed", _sources(corpus), max_glob_files=GLOB_FILES)
    with serving(policy) as session:
        counted = session.ok(source="collector", pattern=FAILED, count_only=True)
        found = session.ok(source="collector", pattern=FAILED, max_lines=MAX_LINES)
    newest = [
        fixtures.collector_file(corpus.collector, index)
        for index in range(COLLECTOR_HOSTS - GLOB_FILES, COLLECTOR_HOSTS)
    ]
    expected = journalctl(newest, FAILED)
    assert {host["host"]: host["matches"] for host in counted["hosts"]} == dict(
        Counter(entry["_HOSTNAME"] for entry in expected)
    )
    assert tool_rows(found) == rows(expected) and found["files"] == counted["files"] == GLOB_FILES
    for result in (counted, found):
        assert result["truncated_reason"] == "max_glob_files"
        assert f"{COLLECTOR_HOSTS - GLOB_FILES} older journal file(s) of collector not searched" in result["notes"][0]


def test_the_audit_log_ends_the_call_with_its_search(server: Session, corpus: Corpus) -> None:
    server.ok(source="collector", pattern="for root", max_lines=7, hostname="host-042")
    deadline = time.monotonic() + 5
    ends: list[dict[str, Any]] = []
    while not ends and time.monotonic() < deadline:
        ends = [
            record
            for record in read_audit(server.audit)
            if record["event"] == "end" and record.get("arguments", {}).get("hostname") == "host-042"
        ]
        time.sleep(0.05)
    (end,) = ends
    assert end["tool"] == "query_journal" and end["outcome"] == "ok" and end["success"] is True
    assert end["engine"] == "journal+grep"
    assert end["files"] == COLLECTOR_HOSTS and end["workers"] == -(-COLLECTOR_HOSTS // MAX_JOURNAL_FILES)
    expected = rows(in_dir(corpus.collector, "for root", "_HOSTNAME=host-042"))
    assert end["lines"] == len(expected) and end["truncated_reason"] is None
    assert end["result_preview"].startswith(f"{len(expected)} matching entries in collector")


def test_files_left_unsearched_by_time_outrank_max_lines() -> None:
    # Timing a search to run out between batches is not repeatable end to end: the rule itself.
    request = JournalRequest(pattern="x", limit=5, max_line_bytes=4096, order="newest")
    target = SearchTarget("collector", [])
    assert journal_search._truncation(journal_search.Merged(more=True), target, request) == "max_lines"
    timed_out = journal_search.Merged(more=True, timed_out=["a.journal"])
    assert journal_search._truncation(timed_out, target, request) == "timeout_s"
    timed_out.capped = True
    assert journal_search._truncation(timed_out, target, request) == "max_output_bytes"
