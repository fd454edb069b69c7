"""An engine's error reaches the client path-free, on one line and short; the audit keeps it whole.

GNU grep prefixes its messages with its own path (`/usr/bin/grep: ...`), and an
engine or a compromised worker can name any file. The real path through a
sandboxed worker is tested with a stand-in engine in
tests/sandbox/test_hostile_engine.py (case engine/stderr-with-paths).
"""

from __future__ import annotations

import pytest

from bastion_wire.protocol import Failed
from broker.errors import ToolError
from broker.pool.outcome import raise_for, worker_end
from broker.pool.worker_process import WorkerResult
from broker.tools.query_logs.engine_error import MAX_CLIENT_CHARS, client_text


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("/usr/bin/grep: Invalid range end", "Invalid range end"),
        ("grep: Unmatched [, [^, [:, [., or [=", "Unmatched [, [^, [:, [., or [="),
        (
            "rg: regex parse error:\n    (?-u)[a\n    ^\nerror: unclosed character class",
            "regex parse error: (?-u)[a ^ error: unclosed character class",
        ),
        ("/usr/bin/grep: /var/log/secret/app.log: Permission denied", "[path]: Permission denied"),
        ("read failed on ../../etc/shadow and ~/.ssh/id_rsa", "read failed on [path] and [path]"),
        ("\x1b[31mred\x1b[0m \u202e bidi \x00 nul", "[31mred [0m bidi nul"),
        ("", "no message"),
    ],
)
def test_client_text(message: str, shown: str) -> None:
    assert client_text(message) == shown


def test_client_text_is_bounded() -> None:
    shown = client_text("x " * 100_000)
    assert len(shown) <= MAX_CLIENT_CHARS and shown.endswith("...")


def test_raise_for_shows_the_engine_error_without_paths_and_the_audit_keeps_it() -> None:
    message = "/usr/bin/grep: /var/log/private/x.log: Invalid range end"
    result = WorkerResult(outcome="failed", failure=Failed("engine_error", message), reaped=True)
    with pytest.raises(ToolError) as raised:
        raise_for(result)
    assert raised.value.message == "the search engine reported an error: [path]: Invalid range end"
    assert "/" not in raised.value.message
    assert worker_end(1234, result).audit_fields()["worker_error"] == f"engine_error: {message}"
