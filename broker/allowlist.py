"""Which files a client may name, and how the broker opens them.

A request names a path as text. It is allowed only when the policy names that
text, exactly or by a glob matched one path segment at a time. The file is then
opened beneath the directory its entry pinned at load (broker/pinned_entry.py),
without following any symlink (broker/no_follow_open.py): what is served is the
file that really sits beneath that directory inode, never what a path string
resolves to at request time. Listing and glob expansion skip symlinks alike.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from broker.errors import ToolError
from broker.no_follow_open import open_beneath
from broker.pinned_entry import PinnedEntry, pin
from broker.policy import Policy
from bastion_wire.protocol import MAX_SEARCH_FILES

MAX_PATH_BYTES = 4096
NOT_ALLOWED = "log_path is not an allowlisted log (see the resources list for valid paths)"


@dataclass(frozen=True)
class AllowedLog:
    path: str  # as the client names it
    description: str


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


def check_path_text(value: object, name: str = "log_path") -> str:
    """Syntactic checks that need no filesystem access."""
    if not isinstance(value, str) or not value:
        raise ToolError(f"{name} must be a non-empty string")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError(f"{name} contains characters that are not valid Unicode") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise ToolError(f"{name} is longer than {MAX_PATH_BYTES} bytes")
    if _has_control(value):
        raise ToolError(f"{name} contains NUL or control characters")
    if not value.startswith("/"):
        raise ToolError(f"{name} must be an absolute path")
    if os.path.normpath(value) != value or value.startswith("//"):
        raise ToolError(f"{name} must be a normalized path (no '..', '.', '//' or trailing '/')")
    return value


def _segment_matches(have: str, want: str) -> bool:
    # As in shell globs, a wildcard never matches a leading dot (hidden files).
    if have.startswith(".") and not want.startswith("."):
        return False
    return fnmatchcase(have, want)


def _segments_match(pattern: str, path: str) -> bool:
    want, have = pattern.split("/"), path.split("/")
    return len(want) == len(have) and all(_segment_matches(h, w) for w, h in zip(want, have))


@dataclass(frozen=True)
class OpenedLog:
    path: str
    fd: int
    gzip: bool
    mtime: float


@dataclass(frozen=True)
class SearchTarget:
    log_path: str  # as the client named it
    files: list[OpenedLog]

    def close(self) -> None:
        for log in self.files:
            os.close(log.fd)


ROTATION = re.compile(r"\.([1-9][0-9]{0,3})(\.gz)?")


FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
LISTING_FLAGS = os.O_RDONLY | os.O_DIRECTORY


class Unopenable(ToolError):
    """A file an entry names that cannot be served. `reason` names no path, so a glob
    search can skip the file and say why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} is allowlisted but {reason}")
        self.reason = reason


REASONS = {
    errno.ENOENT: "does not exist right now",
    errno.ENOTDIR: "does not exist right now",
    errno.ELOOP: "is a symlink or lies behind one, and symlinks are never followed",
}
NOT_REGULAR = "is not a regular file"
HARD_LINKED = "has more than one name (a hard link), so it may be some other file"


def _servable(st: os.stat_result) -> bool:
    # A second name could be a hard link to a file outside the allowlist (where
    # fs.protected_hardlinks is off); log files have one name, or none once
    # rotated away after the open (still the file that was beneath the directory).
    return stat.S_ISREG(st.st_mode) and st.st_nlink <= 1


def _is_rotation_of(base: str, path: str) -> bool:
    return path.startswith(base) and ROTATION.fullmatch(path[len(base):]) is not None


def _below(directory: str, path: str) -> str:
    """path's name relative to `directory`, which is one of its literal leading segments."""
    return path[len(directory):].lstrip("/")


def _scan(dirfd: int, relative: str, wanted: Callable[[str], bool]) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of the wanted names in a directory beneath `dirfd`, reached without
    following symlinks ([] if it is gone or unreadable: a glob then matches nothing there)."""
    try:
        fd = open_beneath(dirfd, relative or ".", LISTING_FLAGS)
    except OSError:
        return []
    found = []
    try:
        with os.scandir(fd) as entries:
            for item in entries:
                if wanted(item.name) and not item.is_symlink():
                    found.append((item.name, item.stat(follow_symlinks=False)))
    except OSError:  # the directory or an entry vanished meanwhile
        pass
    finally:
        os.close(fd)
    return found


class Allowlist:
    """The policy's [[logs]] entries, each pinned to a directory opened at load.

    Raises PolicyError for an entry with a symlink on its path that it may not
    follow. The descriptors live as long as the Allowlist (the process, when serving)."""

    def __init__(self, policy: Policy) -> None:
        pinned: list[PinnedEntry] = []
        self._finalizer = weakref.finalize(self, _close_all, pinned)
        for index, entry in enumerate(policy.logs):
            pinned.append(pin(entry, f"logs[{index}].path"))  # on PolicyError the finalizer closes the rest
        self.pinned: tuple[PinnedEntry, ...] = tuple(pinned)
        self._max_glob_files = policy.limits.max_glob_files

    def close(self) -> None:
        self._finalizer()

    def notes(self) -> list[str]:
        """Entries left inert at load (their directory could not be opened), for the operator."""
        return [f"{p.entry.path}: not served until a restart: {p.problem}" for p in self.pinned if p.dirfd is None]

    def _match(self, path: str) -> tuple[PinnedEntry, str] | None:
        """The entry naming `path`, and the name to open beneath that entry's directory."""
        for pinned in self.pinned:
            entry = pinned.entry
            if entry.is_glob and _segments_match(entry.path, path):
                return pinned, _below(pinned.shown, path)
            if not entry.is_glob and entry.path == path:
                return pinned, pinned.name
            if not entry.is_glob and entry.rotations and _is_rotation_of(entry.path, path):
                return pinned, pinned.name + path[len(entry.path):]
        return None

    def open_search(self, value: object) -> SearchTarget:
        """The file(s) one search covers, opened: a file; a file and its rotations
        (oldest first, the live file last); or every file a glob entry matches (oldest first)."""
        path = check_path_text(value)
        found = self._match(path)
        if found is not None and found[0].entry.is_glob and found[0].entry.path == path:
            members = sorted(self._glob_members(found[0]))[: min(self._max_glob_files, MAX_SEARCH_FILES)]
            return self._open_all(path, [name for _, name in members])
        if found is not None and found[0].entry.rotations and found[0].entry.path == path:
            return self._open_all(path, [*self._rotations(found[0], MAX_SEARCH_FILES - 1), path])
        _, fd = self.open(path)
        return SearchTarget(path, [OpenedLog(path, fd, path.endswith(".gz"), os.fstat(fd).st_mtime)])

    def _open_all(self, shown: str, paths: list[str]) -> SearchTarget:
        opened: list[OpenedLog] = []
        try:
            for path in paths:
                _, fd = self.open(path)
                opened.append(OpenedLog(path, fd, path.endswith(".gz"), os.fstat(fd).st_mtime))
        except BaseException:
            for log in opened:
                os.close(log.fd)
            raise
        if not opened:
            raise ToolError("log_path is allowlisted but no file of it exists right now")
        return SearchTarget(shown, opened)

    def _glob_members(self, pinned: PinnedEntry) -> list[tuple[float, str]]:
        """(mtime, path as the client names it) of each servable file a glob entry matches
        now, found one pattern segment at a time beneath its pinned directory; symlinks,
        to files or directories, are skipped."""
        if pinned.dirfd is None:
            return []
        dirfd = pinned.dirfd
        *directories, last = pinned.name.split("/")
        levels = [""]
        for want in directories:
            levels = [
                os.path.join(relative, name)
                for relative in levels for name, st in _scan(dirfd, relative, functools.partial(_segment_matches, want=want))
                if stat.S_ISDIR(st.st_mode)
            ]
        return [
            (st.st_mtime, os.path.join(pinned.shown, relative, name))
            for relative in levels for name, st in _scan(dirfd, relative, functools.partial(_segment_matches, want=last))
            if _servable(st)
        ]

    def _rotations(self, pinned: PinnedEntry, limit: int) -> list[str]:
        """NAME.N and NAME.N.gz beside a literal entry's file: oldest (highest N) first,
        at most `limit` of the newest, as the client names them."""
        if pinned.dirfd is None:
            return []
        base = pinned.name
        found = sorted(
            (int(ROTATION.fullmatch(name[len(base):]).group(1)), pinned.entry.path + name[len(base):])  # type: ignore[union-attr]
            for name, st in _scan(pinned.dirfd, "", functools.partial(_is_rotation_of, base))
            if _servable(st)
        )
        return [name for _, name in reversed(found[:limit])]

    def logs(self) -> list[AllowedLog]:
        """Every allowlisted file that exists now and could be served (globs expanded, bounded)."""
        found: dict[str, AllowedLog] = {}
        for pinned in self.pinned:
            if pinned.entry.is_glob:
                paths = sorted(name for _, name in self._glob_members(pinned))[: self._max_glob_files]
            else:
                paths = [pinned.entry.path] if self._literal_exists(pinned) else []
            for path in paths:
                found.setdefault(path, AllowedLog(path, pinned.entry.description))
        return list(found.values())

    def files(self, pinned: PinnedEntry) -> list[str]:
        """The servable files an entry covers now, named relative to its pinned directory
        (globs bounded like logs()), for the ownership checks in broker/log_dir_modes.py."""
        if pinned.entry.is_glob:
            return sorted(_below(pinned.shown, path) for _, path in self._glob_members(pinned))[: self._max_glob_files]
        rotations = self._rotations(pinned, self._max_glob_files) if pinned.entry.rotations else []
        names = [pinned.name + path[len(pinned.entry.path):] for path in rotations]
        return [*names, pinned.name] if self._literal_exists(pinned) else names

    def _literal_exists(self, pinned: PinnedEntry) -> bool:
        if pinned.dirfd is None:
            return False
        try:
            return _servable(os.stat(pinned.name, dir_fd=pinned.dirfd, follow_symlinks=False))
        except OSError:
            return False

    def open(self, value: object, name: str = "log_path") -> tuple[str, int]:
        """Validate a client-supplied path and return (path, read-only fd)."""
        path = check_path_text(value, name)
        found = self._match(path)
        if found is None:
            raise ToolError(NOT_ALLOWED.replace("log_path", name))
        return path, _open_file(*found, name)


def _open_file(pinned: PinnedEntry, relative: str, name: str) -> int:
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
        if not _servable(st):
            raise Unopenable(name, NOT_REGULAR if not stat.S_ISREG(st.st_mode) else HARD_LINKED)
        os.set_blocking(fd, True)  # O_NONBLOCK only kept a FIFO from stalling the open itself
    except BaseException:
        os.close(fd)
        raise
    return fd


def _close_all(pinned: list[PinnedEntry]) -> None:
    for entry in pinned:
        if entry.dirfd is not None:
            os.close(entry.dirfd)
    pinned.clear()
