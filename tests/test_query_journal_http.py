"""query_journal over Streamable HTTP: `bastion serve --http` with a client token, the
SDK's HTTP client, a Failed password search of a small collector written by the real
systemd-journal-remote, compared with journalctl -D on the same directory."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import anyio
import pytest

from broker.transport.http_tokens import digest
from tests import journal_fixtures as fixtures
from tests.conftest import read_audit, write_policy
from tests.test_http import Served, free_port, http_client
from tests.test_journal_worker import journalctl, rows
from tests.test_query_journal import FAILED, tool_rows

pytestmark = pytest.mark.skipif(
    not fixtures.JOURNAL_REMOTE.exists() or shutil.which("journalctl") is None,
    reason="needs systemd-journal-remote and journalctl (make deps)",
)
TOKEN = "bst_journal-reader-token-for-tests-only"
HOSTS = 5


@pytest.mark.anyio
async def test_a_failed_password_search_over_http_equals_journalctl(tmp_path: Path) -> None:
    collector = tmp_path / "collector"
    fixtures.build_collector(collector, HOSTS, 30)
    log = tmp_path / "app.log"
    log.write_text("a plain log, so the policy has one\n")
    toml = (
        f'[[http.clients]]\nname = "soc"\ntoken_sha256 = "{digest(TOKEN)}"\n\n'
        f'[[journals]]\nname = "collector"\npath = "{collector}"\n'
    )
    server = Served(write_policy(tmp_path, [log], toml=toml), free_port())
    try:
        async with http_client(server.url, TOKEN) as client:
            listed = await client.list_tools()
            assert "query_journal" in [tool.name for tool in listed.tools]
            found = await client.call_tool("query_journal", {"source": "collector", "pattern": FAILED})
            counted = await client.call_tool(
                "query_journal", {"source": "collector", "pattern": FAILED, "count_only": True}
            )
    finally:
        code, stderr = await anyio.to_thread.run_sync(server.stop)
    assert code == 0, stderr
    expected = journalctl([], FAILED, "-D", str(collector))
    assert not found.is_error and isinstance(found.structured_content, dict)
    assert len(expected) == HOSTS * 12 and tool_rows(found.structured_content) == rows(expected)
    assert found.structured_content["files"] == HOSTS
    assert isinstance(counted.structured_content, dict)
    per_host = {host["host"]: host["matches"] for host in counted.structured_content["hosts"]}
    assert per_host == dict(Counter(entry["_HOSTNAME"] for entry in expected))
    ends = [record for record in read_audit(tmp_path / "audit.jsonl") if record["event"] == "end"]
    journal_ends = [record for record in ends if record["tool"] == "query_journal"]
    assert [(record["client"], record["outcome"]) for record in journal_ends] == [("soc", "ok")] * 2
