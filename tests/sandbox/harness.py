"""Shared machinery of the sandbox escape suite: attempts, running them, classifying fates.

An Attempt names a program (a subcommand of payloads/attempt.c, a special
static program, or a Python payload run inside the confined worker), the
worker profile it is confined as, and the set of outcomes that count as
"contained". `run_attempt` drives `bastion sandbox run` (always with pipes:
RLIMIT_FSIZE is 0, so a regular-file stdout would fail) and `classify` turns
what came back into one observed outcome:

    escaped   some line starts with ESCAPED (always a failure)
    blocked   exit 0 and a BLOCKED line: the program saw the call fail
    ok        exit 0 and an OK line: a positive control worked
    SIGxxx    the confined program was killed by that signal
    timeout   `--timeout` ran out and the sandbox killed it
    exit N    anything else (unexpected)

Results are collected per session and printed as a table at the end.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import BASTION, wait_no_workers
from tests.sandbox.listeners import Listeners

PAYLOADS = Path(__file__).resolve().parent / "payloads"
RUN_PREFIX = "bastion sandbox run: "
SUBPROCESS_SLACK_S = 30.0
LINGER_WAIT_S = 3.0


@dataclass(frozen=True)
class Attempt:
    """One escape attempt: what runs, confined how, and which fates are acceptable."""

    id: str
    profile: str
    expected: frozenset[str]
    args: tuple[str, ...] = ()  # attempt.c subcommand and arguments; {placeholders} allowed
    program: str = "attempt"  # key of a compiled program (ignored for Python payloads)
    python: str | None = None  # payload file name in payloads/
    pass_fd: str | None = None  # key of a path in SandboxEnv.paths, handed as fd 3
    profiles: str = "shipped"  # "shipped" or "tight" (a --profiles-dir copy with small limits)
    timeout_s: float = 10.0
    detail: str = ""  # if set, the observed detail must contain it (e.g. "ENOSYS")
    known_weakness: str = ""  # non-empty: a confirmed escape, kept as a strict xfail

    @property
    def label(self) -> str:
        return (
            f"{self.profile}{'' if self.profiles == 'shipped' else '/' + self.profiles}{' (py)' if self.python else ''}"
        )


@dataclass(frozen=True)
class Observed:
    outcome: str
    detail: str
    stdout: str
    stderr: str


@dataclass
class SandboxEnv:
    """Everything an attempt may refer to: compiled programs, paths, ports, pids."""

    programs: dict[str, Path]
    profile_dirs: dict[str, Path | None]
    paths: dict[str, Path]
    values: dict[str, Any]
    scratch: Path

    def render(self, text: str) -> str:
        return text.format(**self.values, **{key: str(path) for key, path in self.paths.items()})


@dataclass
class Row:
    id: str
    profile: str
    expected: str
    observed: str
    verdict: str


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)

    def record(
        self, attempt_id: str, profile: str, expected: frozenset[str] | str, observed: str, verdict: str
    ) -> None:
        wanted = expected if isinstance(expected, str) else "|".join(sorted(expected))
        self.rows.append(Row(attempt_id, profile, wanted, observed, verdict))

    def table(self) -> list[str]:
        header = Row("attempt", "profile", "expected", "observed", "verdict")
        rows = [header, *self.rows]
        widths = [
            min(72, max(len(getattr(row, name)) for row in rows)) for name in ("id", "profile", "expected", "observed")
        ]

        def fmt(row: Row) -> str:
            cells = [row.id, row.profile, row.expected, row.observed]
            return (
                "  ".join(cell[:width].ljust(width) for cell, width in zip(cells, widths, strict=True))
                + "  "
                + row.verdict
            )

        return [fmt(header), "-" * (sum(widths) + 2 * len(widths) + 8), *[fmt(row) for row in self.rows]]


# --- running -----------------------------------------------------------------------


def payload_file(attempt: Attempt, env: SandboxEnv) -> Path:
    """The Python payload as run: the shared prelude, the parameters, the payload."""
    assert attempt.python is not None
    text = (
        (PAYLOADS / "_prelude.py").read_text()
        + f"\nPARAMS = {env.values!r}\n\n"
        + (PAYLOADS / attempt.python).read_text()
    )
    target = env.scratch / f"{attempt.id.replace('/', '_')}-{attempt.profile}.py"
    target.write_text(text)
    return target


def command_for(attempt: Attempt, env: SandboxEnv) -> list[str]:
    command = [str(BASTION), "sandbox", "run", "--profile", attempt.profile, "--timeout", f"{attempt.timeout_s:g}"]
    profiles = env.profile_dirs[attempt.profiles]
    if profiles is not None:
        command += ["--profiles-dir", str(profiles)]
    if attempt.pass_fd:
        command += ["--pass-fd", str(env.paths[attempt.pass_fd])]
    if attempt.python:
        return command + ["--python", str(payload_file(attempt, env))]
    return command + ["--", str(env.programs[attempt.program]), *(env.render(arg) for arg in attempt.args)]


def run_attempt(attempt: Attempt, env: SandboxEnv) -> Observed:
    proc = subprocess.run(
        command_for(attempt, env),
        capture_output=True,  # pipes, never files: the program's RLIMIT_FSIZE is 0
        stdin=subprocess.DEVNULL,
        timeout=attempt.timeout_s + SUBPROCESS_SLACK_S,
        cwd=env.scratch,
    )
    return classify(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


def _fate(stderr: str) -> str:
    for line in reversed(stderr.splitlines()):
        if line.startswith(RUN_PREFIX) and not line.startswith(RUN_PREFIX + "profile "):
            return line.removeprefix(RUN_PREFIX)
    return ""


def classify(code: int, stdout: str, stderr: str) -> Observed:
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    results = [line for line in lines if line.split(" ", 1)[0] in ("ESCAPED", "BLOCKED", "OK")]
    fate = _fate(stderr)
    signal_match = re.fullmatch(r"killed by signal (SIG[A-Z0-9]+)", fate)
    if any(line.startswith("ESCAPED") for line in results):
        outcome, detail = "escaped", next(line for line in results if line.startswith("ESCAPED"))
    elif code == 2 and "not a regular file" in stderr:
        outcome, detail = "refused", "not a regular file: nothing was handed over or run"
    elif fate.startswith("timed out"):
        outcome, detail = "timeout", "timeout"
    elif signal_match:
        outcome = detail = signal_match.group(1)
    elif code == 0 and len(results) == 1:
        outcome, detail = results[0].split(" ", 1)[0].lower(), results[0]
    else:
        outcome, detail = f"exit {code}", (fate or stderr.strip()[-200:] or "no output")
    return Observed(outcome, re.sub(r"(\.\./){2,}", ".../", detail)[:120], stdout, stderr)


# --- after a run: nothing may be left behind ---------------------------------------------


def lingering(marker: str) -> list[psutil.Process]:
    """Processes still alive whose command line mentions `marker` (bounded wait)."""
    deadline = time.monotonic() + LINGER_WAIT_S
    while True:
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmdline = proc.info["cmdline"] or []
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(marker in part for part in cmdline):
                found.append(proc)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def kill_all(processes: list[psutil.Process]) -> None:
    for proc in processes:
        try:
            proc.kill()
        except psutil.Error:
            pass


def damage(env: SandboxEnv, handed_text: bytes) -> list[str]:
    """Changes to the files the attempts aim at (there must be none)."""
    found = []
    if env.paths["handed_log"].read_bytes() != handed_text:
        found.append("the handed-over log was modified")
    entries = sorted(path.name for path in env.paths["secret_dir"].iterdir())
    if entries != ["secret.txt"]:
        found.append(f"the handed directory now holds {entries}")
    return found


def after_run_problems(env: SandboxEnv, listeners: Listeners, handed_text: bytes) -> list[str]:
    """Everything an attempt left behind outside the sandbox."""
    problems = [f"listener reached: {hit}" for hit in listeners.hits()]
    left = lingering(str(env.programs["attempt"].parent))
    if left:
        problems.append(f"processes left behind: {[proc.pid for proc in left]}")
        kill_all(left)
    workers = wait_no_workers()
    if workers:
        problems.append(f"workers left behind: {[proc.pid for proc in workers]}")
        kill_all(workers)
    return problems + damage(env, handed_text)


def verdict_for(attempt: Attempt, observed: Observed, problems: list[str]) -> str:
    if observed.outcome == "escaped" or problems:
        return "ESCAPED (known weakness, strict xfail)" if attempt.known_weakness else "ESCAPED"
    if observed.outcome not in attempt.expected or attempt.detail not in observed.detail:
        return "UNEXPECTED"
    return "works (control)" if observed.outcome == "ok" else "contained"


def execute(attempt: Attempt, env: SandboxEnv, listeners: Listeners, results: Results, handed_text: bytes) -> None:
    """Run one attempt, record it in the table, and fail unless it was contained."""
    observed = run_attempt(attempt, env)
    problems = after_run_problems(env, listeners, handed_text)
    shown = observed.detail if not problems else f"{observed.detail}; {'; '.join(problems)}"
    results.record(attempt.id, attempt.label, attempt.expected, shown, verdict_for(attempt, observed, problems))
    context = (
        f"{attempt.id}: observed {observed.outcome!r} ({observed.detail})"
        f"\nstdout: {observed.stdout[-500:]}\nstderr: {observed.stderr[-800:]}"
    )
    assert not problems, f"{context}\nleft behind: {problems}"
    assert observed.outcome != "escaped", context
    assert observed.outcome in attempt.expected, f"{context}\nexpected one of {sorted(attempt.expected)}"
    assert attempt.detail in observed.detail, f"{context}\nexpected the detail to mention {attempt.detail!r}"
