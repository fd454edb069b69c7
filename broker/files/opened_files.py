"""A search's files as the broker opens them: beneath a directory pinned at load, no
symlink followed, only regular files with one name; and in batches, so a call holds at
most one worker's worth of descriptors however many files it covers.

Shared by the [[logs]] allowlist (broker/files/allowlist.py) and the [[journals]]
sources (broker/files/journal_files.py): both serve files through the same rules.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.errors import ToolError
from broker.files.no_follow_open import open_beneath
from broker.files.pinned_entry import PinnedEntry

NOT_ALLOWED = "log_path is not an allowlisted log (list_logs lists them)"
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
REASONS = {
    errno.ENOENT: "does not exist right now",
    errno.ENOTDIR: "does not exist right now",
    errno.ELOOP: "is a symlink or lies behind one, and symlinks are never followed",
}
NOT_REGULAR = "is not a regular file"
HARD_LINKED = "has more than one name (a hard link), so it may be some other file"


@dataclass(frozen=True)
class OpenedLog:
    path: str
    fd: int
    gzip: bool
    mtime: float


@dataclass(frozen=True)
class Skipped:
    path: str  # as the client would name it
    reason: str  # why it was not searched; never an internal path


@dataclass
class SearchTarget:
    """The files one search covers, in the order they are searched, opened one
    descriptor batch (what one worker takes) at a time."""

    log_path: str  # as the client named it
    files: list[OpenedLog]  # the batch opened now
    pending: deque[str] = field(default_factory=deque)  # chosen, opened when the search gets to them
    skipped: list[Skipped] = field(default_factory=list)  # chosen but unusable, in the order met
    left_out: list[str] = field(default_factory=list)  # matched beyond max_glob_files, least recently modified first
    chosen: int = 0  # files chosen to be searched (batches, pending and skipped together)
    # Sizes of the chosen files when they were listed: a progress total for the batches not opened yet.
    listed_bytes: dict[str, int] = field(default_factory=dict)

    def pending_bytes(self) -> int:
        return sum(self.listed_bytes.get(path, 0) for path in self.pending)

    def close(self) -> None:
        for log in self.files:
            os.close(log.fd)
        self.files = []


class Unopenable(ToolError):
    """A file an entry names that cannot be served. `reason` names no path, so a glob
    search can skip the file and say why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} is allowlisted but {reason}")
        self.reason = reason


def servable(st: os.stat_result) -> bool:
    # A second name could be a hard link to a file outside the allowlist (where
    # fs.protected_hardlinks is off); log files have one name, or none once
    # rotated away after the open (still the file that was beneath the directory).
    return stat.S_ISREG(st.st_mode) and st.st_nlink <= 1


def open_file(pinned: PinnedEntry, relative: str, name: str) -> int:
    """`relative` opened beneath the entry's pinned directory, no symlink followed: what is
    served is the file that really is there, whatever any path string now resolves to."""
    if pinned.dirfd is None:
        raise Unopenable(name, REASONS[errno.ENOENT])
    try:
        fd = open_beneath(pinned.dirfd, relative, FILE_FLAGS)
    except OSError as exc:
        if exc.errno == errno.EXDEV:  # unreachable for normalized names; refused all the same
            raise ToolError(NOT_ALLOWED.replace("log_path", name)) from None
        raise Unopenable(name, REASONS.get(exc.errno or 0, "cannot be opened")) from None
    try:
        st = os.fstat(fd)
        if not servable(st):
            raise Unopenable(name, NOT_REGULAR if not stat.S_ISREG(st.st_mode) else HARD_LINKED)
        os.set_blocking(fd, True)  # O_NONBLOCK only kept a FIFO from stalling the open itself
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_batch(target: SearchTarget, open_one: Callable[[str], int], batch: int) -> None:
    """Open the target's next batch in place (the previous one must be closed): up to
    `batch` usable files; each unusable one is skipped with its reason."""
    assert not target.files, "close the previous batch first"
    while target.pending and len(target.files) < batch:
        path = target.pending.popleft()
        try:
            fd = open_one(path)
        except Unopenable as exc:
            target.skipped.append(Skipped(path, exc.reason))
            continue
        except ToolError:
            target.skipped.append(Skipped(path, "is not an allowlisted log"))
            continue
        target.files.append(OpenedLog(path, fd, path.endswith(".gz"), os.fstat(fd).st_mtime))


def choose(
    shown: str, oldest_first: list[str], newest_first: bool, sizes: dict[str, int], max_files: int, what: str
) -> SearchTarget:
    """A target over the newest `max_files` of `oldest_first` (the others left out), in
    the order asked for, nothing opened yet. ToolError when there is no file at all."""
    cut = max(0, len(oldest_first) - max_files)
    chosen = oldest_first[cut:][::-1] if newest_first else oldest_first[cut:]
    if not chosen:
        raise ToolError(f"{what} is allowlisted but no file of it exists right now")
    target = SearchTarget(shown, [], deque(chosen), left_out=oldest_first[:cut], chosen=len(chosen))
    target.listed_bytes = {path: sizes[path] for path in chosen if path in sizes}
    return target


def first_batch_or_refuse(target: SearchTarget, what: str) -> SearchTarget:
    """The target with its first batch opened; ToolError if no chosen file could be."""
    if not target.files:  # the batch takes every usable file it meets: none of them is
        first = target.skipped[0].reason
        others = f" (nor any of the other {target.chosen - 1})" if target.chosen > 1 else ""
        raise ToolError(f"{what} is allowlisted but no file of it can be searched right now: one {first}{others}")
    return target
