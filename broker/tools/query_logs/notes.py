"""What a search over several files tells the client about the files it did not cover.

A glob or a log's rotations can leave files out (beyond limits.max_glob_files),
skip files it cannot open, or lose one whose engine a limit stopped. None of
that may be silent: each becomes a short note. Names are shown relative to the
directory the client's log_path names (host7/auth.log for remote/*/auth.log),
so nothing beyond the allowlisted names the client already used appears, and
every list is bounded.
"""

from __future__ import annotations

import os

from bastion_wire.protocol import SearchRequest
from broker.files.allowlist import SearchTarget, Skipped
from broker.policy import GLOB_CHARS, Limits
from broker.tools.query_logs.batches import Progress

MAX_NAMED = 10  # files named in one note; the rest are counted
MAX_NOTE_CHARS = 300  # of a worker's note (it comes from a possibly compromised process)


def _base_dir(log_path: str) -> str:
    """The literal directory in front of the first glob segment, or the log's own directory."""
    parts = log_path.split("/")
    first_glob = next((i for i, part in enumerate(parts) if GLOB_CHARS.search(part)), len(parts) - 1)
    return "/".join(parts[:first_glob]) + "/"


def shown(log_path: str, path: str) -> str:
    base = _base_dir(log_path)
    return path[len(base) :] if path.startswith(base) and len(path) > len(base) else os.path.basename(path)


def _named(log_path: str, paths: list[str]) -> str:
    names = ", ".join(shown(log_path, path) for path in paths[:MAX_NAMED])
    rest = len(paths) - MAX_NAMED
    return names + (f" and {rest} more" if rest > 0 else "")


def left_out(log_path: str, paths: list[str], limit: int) -> str:
    """The files beyond max_glob_files (least recently modified first)."""
    return (
        f"{len(paths)} matching file(s) were not searched: limits.max_glob_files = {limit} keeps the {limit} most "
        f"recently modified; left out, oldest first: {_named(log_path, paths)}"
    )


def timed_out(log_path: str, paths: list[str], timeout_s: float) -> str:
    return (
        f"{len(paths)} file(s) were not searched: the call reached limits.timeout_s ({timeout_s:g} s); "
        f"not searched: {_named(log_path, paths)}"
    )


def not_reached(count: int) -> str:
    return f"max_lines was reached with {count} file(s) still to search: more matches may exist there"


def _how_far(failed_part_way: bool) -> str:
    return "not searched to the end" if failed_part_way else "not searched"


def skipped(log_path: str, files: list[Skipped], failed: int = 0) -> list[str]:
    """One note per skipped file, up to MAX_NAMED; then one that counts the rest. The
    last `failed` of them were handed over, but their engine died part-way."""
    first_failed = len(files) - failed
    notes = [
        f"{shown(log_path, file.path)}: {_how_far(index >= first_failed)}: {file.reason}"
        for index, file in enumerate(files[:MAX_NAMED])
    ]
    if len(files) > MAX_NAMED:
        notes.append(f"{len(files) - MAX_NAMED} more file(s) not searched (the audit log names them)")
    return notes


def worker_note(log_path: str, note: str, paths: list[str]) -> str:
    """The worker says "file #N:"; the client should see the name. Bounded, printable."""
    note = "".join(char if char.isprintable() else "?" for char in note[:MAX_NOTE_CHARS])
    if note.startswith("file #"):
        index, colon, rest = note[len("file #") :].partition(":")
        if colon and index.isdigit() and int(index) < len(paths):
            return f"{shown(log_path, paths[int(index)])}:{rest}"
    return note


def truncation(progress: Progress, cut: bool, target: SearchTarget, request: SearchRequest) -> str | None:
    """Why the answer is incomplete, the most pressing reason first: what the client
    would have to change first to see more."""
    if progress.capped or cut:
        return "max_output_bytes"
    if progress.more or (progress.full(request) and target.pending):
        return "max_lines"
    if progress.timed_out:
        return "timeout_s"
    return "max_glob_files" if target.left_out else None


def coverage(target: SearchTarget, progress: Progress, request: SearchRequest, limits: Limits) -> list[str]:
    """The notes on files the search did not cover to the end, or at all."""
    notes = skipped(target.log_path, target.skipped + progress.failed, len(progress.failed))
    if target.pending and progress.full(request) and not (progress.more or progress.capped or progress.timed_out):
        # max_lines reached exactly as a batch ended: no worker starts to look for one more
        notes.append(not_reached(len(target.pending)))
    if progress.timed_out:
        notes.append(timed_out(target.log_path, progress.timed_out, limits.timeout_s))
    if target.left_out:
        notes.append(left_out(target.log_path, target.left_out, limits.max_glob_files))
    return notes
