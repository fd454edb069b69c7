"""Which files a client may name, and how the broker opens them.

A request names a path as text. It is allowed only when both the text itself
and the file it finally resolves to (all symlinks followed) are named by the
policy, either exactly or by a glob matched one path segment at a time. The
file is then opened read-only without following a final symlink, and the path
of the *opened* descriptor is checked again, so swapping a directory for a
symlink between the check and the open gains nothing.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections import deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from broker.errors import ToolError
from broker.policy import GLOB_CHARS, LogEntry, Policy
from workers.protocol import MAX_SEARCH_FILES

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


def _resolve_glob_prefix(pattern: str) -> str:
    """Resolve the literal directories in front of a glob (e.g. /var/log -> /private/var/log)."""
    parts = pattern.split("/")
    first_glob = next(i for i, part in enumerate(parts) if GLOB_CHARS.search(part))
    prefix = "/".join(parts[:first_glob]) or "/"
    return os.path.join(os.path.realpath(prefix), *parts[first_glob:])


@dataclass(frozen=True)
class OpenedLog:
    path: str
    fd: int
    gzip: bool
    mtime: float


@dataclass(frozen=True)
class Skipped:
    path: str    # as the client would name it
    reason: str  # why it was not searched; never an internal path


@dataclass
class SearchTarget:
    """The files one search covers, in the order they are searched, opened one
    descriptor batch (at most MAX_SEARCH_FILES, what one worker takes) at a time."""

    log_path: str  # as the client named it
    files: list[OpenedLog]  # the batch opened now
    pending: deque[str] = field(default_factory=deque)  # chosen, opened when the search gets to them
    skipped: list[Skipped] = field(default_factory=list)  # chosen but unusable, in the order met
    left_out: list[str] = field(default_factory=list)  # matched beyond max_glob_files, least recently modified first
    chosen: int = 0  # files chosen to be searched (batches, pending and skipped together)

    def close(self) -> None:
        for log in self.files:
            os.close(log.fd)
        self.files = []


MAX_ROTATIONS = 2 * 9999  # every name ROTATION admits: path.N and path.N.gz
ROTATION = re.compile(r"\.([1-9][0-9]{0,3})(\.gz)?")


def _is_rotation_of(base: str, real: str) -> bool:
    return real.startswith(base) and ROTATION.fullmatch(real[len(base):]) is not None


def _rotations_of(path: str, limit: int) -> list[str]:
    """path.N and path.N.gz that exist, oldest (highest N) first, at most `limit` of the newest."""
    found = []
    for candidate in glob.glob(glob.escape(path) + ".*"):
        match = ROTATION.fullmatch(candidate[len(path):])
        if match and os.path.isfile(candidate):
            found.append((int(match.group(1)), candidate))
    found.sort()
    return [name for _, name in reversed(found[:limit])]


def _mtime_then_name(path: str) -> tuple[float, str]:
    try:
        return os.stat(path).st_mtime, path
    except OSError:
        return 0.0, path


def _skip_reason(message: str) -> str:
    """The open error, as the reason one file of a glob or of rotations was skipped."""
    return message.removeprefix("log_path ").removeprefix("is allowlisted but ").split(" (see ")[0]


class Allowlist:
    """The policy's [[logs]] entries, with their resolved forms cached."""

    def __init__(self, policy: Policy) -> None:
        self._entries = list(policy.logs)
        self._max_glob_files = policy.limits.max_glob_files

    def _entry_for(self, path: str) -> LogEntry | None:
        for entry in self._entries:
            if entry.is_glob and _segments_match(entry.path, path):
                return entry
            if not entry.is_glob and entry.path == path:
                return entry
            if not entry.is_glob and entry.rotations and _is_rotation_of(entry.path, path):
                return entry
        return None

    def _resolved_allowed(self, real: str) -> bool:
        """Is a fully resolved path one that an entry names once resolved too?"""
        for entry in self._entries:
            if entry.is_glob and _segments_match(_resolve_glob_prefix(entry.path), real):
                return True
            if not entry.is_glob and os.path.realpath(entry.path) == real:
                return True
            if not entry.is_glob and entry.rotations and _is_rotation_of(os.path.realpath(entry.path), real):
                return True
        return False

    def open_search(self, value: object, newest_first: bool = False) -> SearchTarget:
        """The file(s) one search covers, its first batch opened: a file; a file and its
        rotations; or every file a glob entry matches. Of a glob or rotations the
        max_glob_files most recently modified are chosen (the others are left out,
        reported), searched oldest first, or newest first if asked. Only one file is
        opened per name, and only a batch at a time, so a call holds at most
        MAX_SEARCH_FILES descriptors however large max_glob_files is."""
        path = check_path_text(value)
        entry = self._entry_for(path)
        if entry is not None and entry.is_glob and entry.path == path:
            return self._open_chosen(path, sorted(glob.glob(path), key=_mtime_then_name), newest_first)
        if entry is not None and not entry.is_glob and entry.rotations:
            return self._open_chosen(path, [*_rotations_of(path, MAX_ROTATIONS), path], newest_first)
        _, fd = self.open(path)
        return SearchTarget(path, [OpenedLog(path, fd, path.endswith(".gz"), os.fstat(fd).st_mtime)], chosen=1)

    def _open_chosen(self, shown: str, oldest_first: list[str], newest_first: bool) -> SearchTarget:
        cut = max(0, len(oldest_first) - self._max_glob_files)
        chosen = oldest_first[cut:][::-1] if newest_first else oldest_first[cut:]
        if not chosen:
            raise ToolError("log_path is allowlisted but no file of it exists right now")
        target = SearchTarget(shown, [], deque(chosen), left_out=oldest_first[:cut], chosen=len(chosen))
        self.open_next(target)  # no file usable at all: target.files stays empty, the caller says why
        return target

    def open_next(self, target: SearchTarget) -> None:
        """Open the target's next batch in place (the previous one must be closed): up to
        MAX_SEARCH_FILES usable files; each unusable one is skipped with its reason."""
        assert not target.files, "close the previous batch first"
        while target.pending and len(target.files) < MAX_SEARCH_FILES:
            path = target.pending.popleft()
            try:
                _, fd = self.open(path)
            except ToolError as exc:
                target.skipped.append(Skipped(path, _skip_reason(exc.message)))
                continue
            target.files.append(OpenedLog(path, fd, path.endswith(".gz"), os.fstat(fd).st_mtime))

    def logs(self) -> list[AllowedLog]:
        """Every currently existing allowlisted file (globs expanded, bounded)."""
        found: dict[str, AllowedLog] = {}
        for entry in self._entries:
            paths = sorted(glob.glob(entry.path))[: self._max_glob_files] if entry.is_glob else [entry.path]
            for path in paths:
                if path not in found and self._usable(path):
                    found[path] = AllowedLog(path, entry.description)
        return list(found.values())

    def _usable(self, path: str) -> bool:
        try:
            real = os.path.realpath(path, strict=True)
            return stat.S_ISREG(os.stat(real).st_mode) and self._resolved_allowed(real)
        except OSError:
            return False

    def open(self, value: object, name: str = "log_path") -> tuple[str, int]:
        """Validate a client-supplied path and return (path, read-only fd)."""
        path = check_path_text(value, name)
        if self._entry_for(path) is None:
            raise ToolError(NOT_ALLOWED.replace("log_path", name))
        try:
            real = os.path.realpath(path, strict=True)
        except OSError:
            raise ToolError(f"{name} is allowlisted but the file does not exist right now") from None
        if not self._resolved_allowed(real):
            raise ToolError(NOT_ALLOWED.replace("log_path", name))
        fd = self._open_checked(real, name)
        return path, fd

    def _open_checked(self, real: str, name: str) -> int:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(real, flags)
        except OSError:
            raise ToolError(f"{name} is allowlisted but cannot be opened") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ToolError(f"{name} is not a regular file")
            opened = os.readlink(f"/proc/self/fd/{fd}")
            if not self._resolved_allowed(opened):
                raise ToolError(NOT_ALLOWED.replace("log_path", name))
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd
