"""Policy [[logs]] entries resolved once, at load.

Each entry's directory (a literal entry's parent, a glob's literal prefix) is
opened at load and the descriptor kept for the process lifetime: files are
later opened beneath it without following symlinks, so renaming the directory
away or putting a symlink in its place afterwards changes nothing the broker
opens. A symlink on an entry's path is refused at load unless the entry says
`follow_symlinks = true`; then it is followed this once and its target pinned.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from broker.files.no_follow_open import is_symlink_at, open_beneath
from broker.policy import GLOB_CHARS, LogEntry, PolicyError

DIR_FLAGS = os.O_PATH | os.O_DIRECTORY


@dataclass(frozen=True)
class PinnedEntry:
    entry: LogEntry
    shown: str  # the entry's directory as the policy (and so the client) names it
    real: str  # the directory pinned: `shown`, or where its symlinks led at load
    name: str  # literal: the file's name in `real`; glob: the pattern below it
    dirfd: int | None  # O_PATH descriptor of `real`; None when it could not be opened at load
    problem: str = ""  # why dirfd is None, for the start-up log and doctor (operator-only)


def _split(entry: LogEntry) -> tuple[str, str]:
    """(directory, rest): a file's parent and name, or a glob's literal prefix and pattern."""
    if not entry.is_glob:
        return os.path.split(entry.path)
    parts = entry.path.split("/")
    first_glob = next(i for i, part in enumerate(parts) if GLOB_CHARS.search(part))
    return "/".join(parts[:first_glob]) or "/", "/".join(parts[first_glob:])


def first_symlink(path: str) -> str | None:
    """The first component of an absolute path that is a symlink now (None: none, as far as it exists)."""
    current = ""
    for part in path.strip("/").split("/"):
        current += "/" + part
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return current
        except OSError:
            return None
    return None


def _refuse(key: str, entry: LogEntry, link: str) -> PolicyError:
    where = f"{entry.path} is a symlink" if link == entry.path else f"{link} is a symlink, on the path of {entry.path}"
    return PolicyError(
        f"{key}: {where}; logs are opened without following symlinks, so this entry is refused "
        "(to follow it once, at load, and pin its target, set follow_symlinks = true on the entry)"
    )


def _open_dir(real: str) -> int:
    root = os.open("/", DIR_FLAGS | os.O_CLOEXEC)
    if real == "/":
        return root
    try:
        return open_beneath(root, real.lstrip("/"), DIR_FLAGS)
    finally:
        os.close(root)


def _resolved(entry: LogEntry, shown: str, name: str) -> tuple[str, str]:
    """Where an entry that may follow symlinks leads now: (directory, name in it)."""
    if entry.is_glob:
        return os.path.realpath(shown), name
    return os.path.split(os.path.realpath(entry.path))


def pin(entry: LogEntry, key: str) -> PinnedEntry:
    """Resolve and open one entry's directory. PolicyError for a symlink it may not follow;
    a directory that cannot be opened leaves the entry inert (nothing served) with a problem."""
    shown, name = _split(entry)
    if entry.follow_symlinks:
        real, name = _resolved(entry, shown, name)
    else:
        real = shown
        link = first_symlink(shown if entry.is_glob else entry.path)
        if link is not None:
            raise _refuse(key, entry, link)
    try:
        dirfd = _open_dir(real)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink appeared between the check and the open
            raise _refuse(key, entry, first_symlink(real) or real) from None
        return PinnedEntry(entry, shown, real, name, None, f"{real}: {exc.strerror}")
    if not entry.is_glob and not entry.follow_symlinks and is_symlink_at(dirfd, name):
        os.close(dirfd)
        raise _refuse(key, entry, entry.path)
    return PinnedEntry(entry, shown, real, name, dirfd)
