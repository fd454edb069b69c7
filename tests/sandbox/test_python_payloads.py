"""Escape attempts by Python code running inside a confined worker (the compromised-worker case).

`bastion sandbox run --python FILE` exec()s the payload in the worker itself
after every layer, under the grep and journal profiles (which may read, exec and fork;
a journal worker has libsystemd loaded, as for a call) and under the resource
and intel profiles (no openat, execve, clone or kill at all, so most attempts die
of SIGSYS there). A positive control checks that the
handed-over descriptor still reads correctly: a sandbox that broke
everything would pass every other case.
"""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import HANDED_TEXT
from tests.sandbox.harness import Attempt, Results, SandboxEnv, execute
from tests.sandbox.listeners import Listeners

pytestmark = [pytest.mark.sandbox]

BLOCKED = frozenset({"blocked"})
SIGSYS = frozenset({"SIGSYS"})
OK = frozenset({"ok"})

# payload file -> (expected under grep and journal, under resource and intel); None: not run under that profile.
PAYLOADS: dict[str, tuple[frozenset[str] | None, frozenset[str] | None]] = {
    "py_open_passwd.py": (BLOCKED, SIGSYS),
    "py_listdir_root.py": (BLOCKED, SIGSYS),
    "py_inet_connect.py": (SIGSYS, SIGSYS),
    "py_fork_bomb.py": (BLOCKED, SIGSYS),
    "py_exec_shell.py": (BLOCKED, SIGSYS),
    "py_exec_grep.py": (None, SIGSYS),  # grep and journal workers run grep by design
    "py_setuid.py": (SIGSYS, SIGSYS),
    "py_kill_test_pid.py": (BLOCKED, SIGSYS),
    "py_write_handed.py": (BLOCKED, BLOCKED),
    "py_read_handed.py": (OK, OK),
    "py_ctypes_ptrace.py": (SIGSYS, SIGSYS),
    "py_channel_redirect.py": (BLOCKED, BLOCKED),
}
HANDS_A_FILE = {"py_write_handed.py", "py_read_handed.py"}


def _attempts() -> list[Attempt]:
    found = []
    for payload, per_profile in PAYLOADS.items():
        grep, no_open = per_profile
        for profile, expected in (("grep", grep), ("journal", grep), ("resource", no_open), ("intel", no_open)):
            if expected is None:
                continue
            name = payload.removeprefix("py_").removesuffix(".py").replace("_", "-")
            found.append(
                Attempt(
                    id=f"py/{name}",
                    profile=profile,
                    expected=expected,
                    python=payload,
                    pass_fd="handed_log" if payload in HANDS_A_FILE else None,
                )
            )
    return found


ATTEMPTS = _attempts()


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[f"{a.id}[{a.profile}]" for a in ATTEMPTS])
def test_python_payload(attempt: Attempt, sandbox_env: SandboxEnv, listeners: Listeners, results: Results) -> None:
    execute(attempt, sandbox_env, listeners, results, HANDED_TEXT)
