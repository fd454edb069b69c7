"""The directory a file Bastion writes goes into: the audit log, the intel database.

Only the state directory (`${state}/`, broker/state_dir.py) is created when it is
missing, parents included: that is where a fresh install writes by default. Any
other missing directory is an error that names it, so a typo in the policy
(`/var/lgo/bastion/audit.jsonl`) is reported instead of silently creating a
tree, and a component that is a file is reported as "not a directory" rather
than as mkdir's "File exists".
"""

from __future__ import annotations

import os
import stat


class OutputDirError(Exception):
    """The directory for a file Bastion writes is missing (outside the state directory) or not a directory."""


def directory_problem(path: str, state_root: str | None) -> str:
    """Why `path` cannot be created in its directory, or "" (nothing is created here)."""
    directory = os.path.dirname(os.path.abspath(path))
    existing, missing = _nearest_existing(directory)
    try:
        info = os.stat(existing)
    except OSError as exc:
        return f"cannot use {existing}: {exc.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{existing} is not a directory"
    if missing and not _within(directory, state_root):
        return f"directory {missing} does not exist: create it, or correct the path"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return ""


def prepare_directory(path: str, state_root: str | None, mode: int = 0o700) -> None:
    """Make sure the directory `path` goes into exists, creating it only inside the state directory."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return
    problem = directory_problem(path, state_root)
    if problem:
        raise OutputDirError(problem)
    try:
        os.makedirs(directory, mode=mode, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create {directory}: {exc.strerror}") from None


def _nearest_existing(directory: str) -> tuple[str, str]:
    """The nearest ancestor that exists (file or not), and the topmost missing directory below it ("" if none)."""
    missing = ""
    for _ in range(directory.count("/") + 1):  # bounded by the path's depth
        if os.path.lexists(directory):
            return directory, missing
        missing, directory = directory, os.path.dirname(directory)
    return directory, missing


def _within(directory: str, root: str | None) -> bool:
    if not root:
        return False
    root = os.path.abspath(root)
    return directory == root or directory.startswith(root.rstrip("/") + "/")
