"""The example's sample journal (examples/generate_journal.py): what the real
systemd-journal-remote writes from it, the story the demo tells with it, that query_journal
on the example policy finds what journalctl finds, and how the generator behaves when it
cannot finish (nothing half-written, the reason in one line)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import journal_fixtures as fixtures
from tests.conftest import EXAMPLES
from tests.test_demo import example_policy_copy, run_demo
from tests.test_journal_worker import rows
from tests.test_query_journal import Session, in_dir, serving, tool_rows

sample = fixtures.SAMPLE_JOURNAL  # the generator, loaded once by the fixtures that share its serialiser

pytestmark = pytest.mark.skipif(
    not fixtures.JOURNAL_REMOTE.exists() or shutil.which("journalctl") is None,
    reason="needs systemd-journal-remote and journalctl (make deps)",
)
INTRUDER = sample.COMPROMISED_LOGIN
FILES = {f"remote-{host}.journal" for host in sample.HOSTS}


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "journal"
    assert sample.generate(out) is True
    return out


def entries(journal: Path, *args: str, file: str | None = None) -> list[dict[str, Any]]:
    """What journalctl finds in the directory, or in one `file` of it."""
    source = ["--file", str(journal / file)] if file else ["-D", str(journal)]
    done = subprocess.run(
        ["journalctl", *source, "-o", "json", "--no-pager", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: nothing matched
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_streams_are_the_same_every_run_and_differ_by_seed() -> None:
    first, again = sample.export_streams(), sample.export_streams()
    assert first == again and set(first) == FILES
    assert sample.export_streams(7) != first
    assert sample.digest(first) == sample.digest(again) != sample.digest(sample.export_streams(7))


def test_the_tool_wrote_every_entry_one_file_per_host(journal: Path) -> None:
    assert {path.name for path in journal.iterdir()} == FILES | {sample.STAMP_NAME}
    for host in sample.HOSTS:  # each file holds its host's every entry, and no other host's
        in_file = entries(journal, file=f"remote-{host}.journal")
        assert {entry["_HOSTNAME"] for entry in in_file} == {host}
        assert len(in_file) == len(sample.host_events(sample.DEFAULT_SEED, host)) > 400


def test_the_stamp_says_it_is_synthetic_and_names_the_entries(journal: Path) -> None:
    text = (journal / sample.STAMP_NAME).read_text()
    assert text.startswith("SYNTHETIC SAMPLE DATA")
    assert f"entries-sha256: {sample.digest(sample.export_streams())}\n" in text
    for name in FILES:
        assert re.search(rf"{re.escape(name)}: \d+ entries", text)


def test_the_intruder_tried_web02_then_got_into_web01(journal: Path) -> None:
    failed = entries(journal, "-g", rf"Failed password for deploy from {re.escape(INTRUDER.ip)} ")
    assert Counter(entry["_HOSTNAME"] for entry in failed) == {"web-01": sample.COMPROMISED_FAILURES, "web-02": 12}
    accepted = entries(journal, "-g", "Accepted password")
    assert [(e["_HOSTNAME"], e["MESSAGE"]) for e in accepted] == [
        ("web-01", f"Accepted password for deploy from {INTRUDER.ip} port {INTRUDER.port} ssh2")
    ]
    assert int(accepted[0]["__REALTIME_TIMESTAMP"]) == int(INTRUDER.at.timestamp()) * 1_000_000
    last_failure = max(int(e["__REALTIME_TIMESTAMP"]) for e in failed if e["_HOSTNAME"] == "web-01")
    assert last_failure < int(accepted[0]["__REALTIME_TIMESTAMP"])
    (sudo,) = entries(journal, "-t", "sudo", "-g", "COMMAND=")
    assert sudo["MESSAGE"].endswith(f"COMMAND={sample.PRIVESC_COMMAND}") and sudo["_HOSTNAME"] == "web-01"
    assert sudo["_CMDLINE"] == f"sudo {sample.PRIVESC_COMMAND}"  # a field a restricted source would hide


def test_db01_rebooted_and_every_host_is_in_one_day(journal: Path) -> None:
    boots = Counter((entry["_HOSTNAME"], entry["_BOOT_ID"]) for entry in entries(journal))
    assert Counter(host for host, _boot in boots) == {"web-01": 1, "web-02": 1, "db-01": 2}
    start = int(sample.START.timestamp()) * 1_000_000
    times = [int(entry["__REALTIME_TIMESTAMP"]) for entry in entries(journal)]
    assert start <= min(times) and max(times) < start + 86_400 * 1_000_000


def test_the_hostile_user_name_is_stored_raw(journal: Path) -> None:
    (entry,) = entries(journal, "-g", "Invalid user .*root.* from 45")
    assert bytes(entry["MESSAGE"]).startswith(b"Invalid user " + sample.ANSI_USERNAME)  # journalctl: a byte array


# --- query_journal on the example policy -------------------------------------------------


@pytest.fixture(scope="module")
def example_server(journal: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    directory = tmp_path_factory.mktemp("example")
    policy = example_policy_copy(directory, str(directory / "audit.jsonl"))
    policy.write_text(policy.read_text().replace(f'path = "{EXAMPLES}/journal"', f'path = "{journal}"'))
    with serving(policy) as session:
        yield session


def test_the_example_policy_finds_failed_passwords_as_journalctl_does(example_server: Session, journal: Path) -> None:
    expected = in_dir(journal, "Failed password")
    assert 100 < len(expected) < 1000
    found = example_server.ok(source="fleet", pattern="Failed password", max_lines=1000)
    assert tool_rows(found) == rows(expected) and found["files"] == 3 and not found["truncated"]
    counted = example_server.ok(source="fleet", pattern="Failed password", count_only=True)
    assert {row["host"]: row["matches"] for row in counted["hosts"]} == dict(
        Counter(entry["_HOSTNAME"] for entry in expected)
    )


def test_the_example_s_break_in_window_on_one_host(example_server: Session) -> None:
    found = example_server.ok(
        source="fleet",
        pattern="Accepted password|COMMAND=",
        hostname="web-01",
        since="2026-11-24T03:00:00Z",
        until="2026-11-24T04:00:00Z",
    )
    assert [(line["identifier"], line["time"]) for line in found["lines"]] == [
        ("sshd", "2026-11-24T03:41:17.000000Z"),
        ("sudo", "2026-11-24T03:44:08.300000Z"),
    ]


# --- the generator when it cannot finish --------------------------------------------------


def test_an_up_to_date_journal_is_left_alone_and_force_rewrites_it(tmp_path: Path, journal: Path) -> None:
    out = tmp_path / "journal"
    shutil.copytree(journal, out)
    before = {path.name: path.stat().st_ino for path in out.iterdir()}
    assert sample.generate(out) is False
    assert {path.name: path.stat().st_ino for path in out.iterdir()} == before
    assert sample.generate(out, force=True) is True
    assert {path.name for path in out.iterdir()} == set(before)
    assert not any(path.name.startswith(".journal.") for path in tmp_path.iterdir())  # no work directory left


def test_a_stale_stamp_or_a_missing_file_is_regenerated(tmp_path: Path, journal: Path) -> None:
    out = tmp_path / "journal"
    shutil.copytree(journal, out)
    (out / sample.STAMP_NAME).write_text("entries-sha256: 0000\n")
    assert sample.generate(out) is True
    (out / "remote-db-01.journal").unlink()
    assert sample.generate(out) is True and (out / "remote-db-01.journal").is_file()
    assert sample.generate(out) is False


def test_without_the_tool_it_names_the_package_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sample, "JOURNAL_REMOTE_PATHS", (tmp_path / "no-such-tool",))
    assert sample.main(["--out", str(tmp_path / "journal")]) == 1
    said = capsys.readouterr().err.strip()
    assert said.startswith("generate_journal: systemd-journal-remote is not installed")
    assert "apt-get install systemd-journal-remote" in said and "Traceback" not in said
    assert list(tmp_path.iterdir()) == []


def test_a_failure_part_way_leaves_the_previous_journal(
    tmp_path: Path, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "journal"
    shutil.copytree(journal, out)
    (out / sample.STAMP_NAME).write_text("stale\n")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    real = sample.write_journal_file
    calls = []

    def second_fails(tool: Path, path: Path, stream: bytes) -> int:
        calls.append(path.name)
        if len(calls) == 2:
            raise RuntimeError(f"systemd-journal-remote did not write {path.name}: disk full")
        return int(real(tool, path, stream))

    monkeypatch.setattr(sample, "write_journal_file", second_fails)
    with pytest.raises(RuntimeError, match="disk full"):
        sample.generate(out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["journal"]  # the new directory was removed


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"__REALTIME_TIMESTAMP=soon\nMESSAGE=x\n\n", "0 of 1 entries Failed to parse __REALTIME_TIMESTAMP"),
        (b"__REALTIME_TIMESTAMP=1\nMESSAGE=x\n\n__REALTIME_TIMESTAMP=2\n\n", "1 of 2 entries"),
    ],
)
def test_entries_the_tool_drops_are_an_error_in_one_line(tmp_path: Path, stream: bytes, reason: str) -> None:
    with pytest.raises(RuntimeError, match=r"did not write bad\.journal: ") as refused:
        sample.write_journal_file(sample.journal_remote(), tmp_path / "bad.journal", stream)
    assert reason in str(refused.value) and "\n" not in str(refused.value)


def test_a_tool_that_fails_is_reported_with_its_last_line(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"did not write x\.journal: .*(ailed|rror)") as refused:
        sample.write_journal_file(sample.journal_remote(), tmp_path / "missing-dir" / "x.journal", b"")
    assert "\n" not in str(refused.value)


# --- the demo ----------------------------------------------------------------------------


def test_the_demo_searches_the_sample_journal(tmp_path: Path) -> None:
    done = run_demo(example_policy_copy(tmp_path, str(tmp_path / "audit.jsonl")), tmp_path / "state")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shown = done.stdout.replace("\n      ", " ")  # long entries are wrapped onto indented lines
    assert "query_journal: skipped" not in shown
    assert re.search(r"web-01 +30 matching entries\n +web-02 +12 matching entries", shown)
    assert f"COMMAND={sample.PRIVESC_COMMAND}" in shown
    assert "Invalid user \\x1b[31mroot\\x1b[0m from 45.155.205.233" in shown
    assert "\x1b" not in shown


def test_a_policy_without_the_sample_journal_skips_its_searches(tmp_path: Path) -> None:
    policy = example_policy_copy(tmp_path, str(tmp_path / "audit.jsonl"))
    text = policy.read_text()
    policy.write_text(
        re.sub(
            r'\[\[journals\]\]\nname = "fleet"\npath = "[^"]+"',
            f'[[journals]]\nname = "fleet"\npath = "{tmp_path}/elsewhere"',
            text,
        )
    )
    done = run_demo(policy, tmp_path / "state")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "query_journal: skipped" in done.stdout and "has no journal source 'fleet' reading" in done.stdout
