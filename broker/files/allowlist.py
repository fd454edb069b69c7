"""Which files a client may name, and how the broker opens them.

A request names a path as text. It is allowed only when the policy names that
text, exactly or by a glob matched one path segment at a time. The file is then
opened beneath the directory its entry pinned at load (broker/files/pinned_entry.py),
without following any symlink (broker/files/no_follow_open.py): what is served is the
file that really sits beneath that directory inode, never what a path string
resolves to at request time. Listing skips symlinks; a search lists them among
what it skips, with the reason, and never opens through them.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from bastion_wire.protocol import MAX_SEARCH_FILES
from broker.errors import ToolError
from broker.files.glob_members import glob_members, scan
from broker.files.journal_files import JournalFiles
from broker.files.log_path_text import check_path_text, closest, segments_match
from broker.files.opened_files import (
    HARD_LINKED,
    NOT_ALLOWED,
    NOT_REGULAR,
    OpenedLog,
    SearchTarget,
    Skipped,
    Unopenable,
    choose,
    first_batch_or_refuse,
    open_batch,
    open_file,
    servable,
)
from broker.files.pinned_entry import PinnedEntry, pin
from broker.policy import JournalSource, LogEntry, Policy

__all__ = ["HARD_LINKED", "NOT_ALLOWED", "NOT_REGULAR", "OpenedLog", "SearchTarget", "Skipped", "Unopenable"]
CLOSEST_HINT = "; closest allowlisted: "
CLOSEST_CHARS = 512  # of a refused path compared: bounds difflib's quadratic cost


@dataclass(frozen=True)
class AllowedLog:
    path: str  # as the client names it
    description: str


@dataclass(frozen=True)
class FileFacts:
    path: str  # as the client names it
    size: int
    mtime: float
    compressed: bool


MAX_ROTATIONS = 2 * 9999  # every name ROTATION admits: path.N and path.N.gz
ROTATION = re.compile(r"\.([1-9][0-9]{0,3})(\.gz)?")


def _is_rotation_of(base: str, path: str) -> bool:
    return path.startswith(base) and ROTATION.fullmatch(path[len(base) :]) is not None


def _below(directory: str, path: str) -> str:
    """path's name relative to `directory`, which is one of its literal leading segments."""
    return path[len(directory) :].lstrip("/")


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
        self._names = list(dict.fromkeys(entry.path for entry in policy.logs))  # the policy's, in its order
        self._owner: Allowlist | None = None  # a view's: whose descriptors it uses
        self.journals = JournalFiles(policy)  # the [[journals]] sources, pinned the same way

    def close(self) -> None:
        if self._owner is None:  # a view leaves the descriptors to the allowlist that pinned them
            self._finalizer()
            self.journals.close()

    def restricted(
        self, keep: Callable[[LogEntry], bool], keep_journal: Callable[[JournalSource], bool] | None = None
    ) -> Allowlist:
        """A view holding only the entries `keep` admits (a client's scope, broker/scopes.py):
        it matches, lists and opens nothing else, and names nothing else in a refusal; and
        only the journal sources `keep_journal` admits."""
        view = copy.copy(self)
        view.pinned = tuple(pinned for pinned in self.pinned if keep(pinned.entry))
        view._names = list(dict.fromkeys(pinned.entry.path for pinned in view.pinned))
        if keep_journal is not None:
            view.journals = self.journals.restricted(keep_journal)
        view._owner = self._owner or self  # keeps the pinned descriptors open while the view is in use
        return view

    def notes(self) -> list[str]:
        """Entries left inert at load (their directory could not be opened), for the operator."""
        inert = [f"{p.entry.path}: not served until a restart: {p.problem}" for p in self.pinned if p.dirfd is None]
        return inert + self.journals.notes()

    def _match(self, path: str) -> tuple[PinnedEntry, str] | None:
        """The entry naming `path`, and the name to open beneath that entry's directory."""
        for pinned in self.pinned:
            entry = pinned.entry
            if entry.is_glob and segments_match(entry.path, path):
                return pinned, _below(pinned.shown, path)
            if not entry.is_glob and entry.path == path:
                return pinned, pinned.name
            if not entry.is_glob and entry.rotations and _is_rotation_of(entry.path, path):
                return pinned, pinned.name + path[len(entry.path) :]
        return None

    def open_search(self, value: object, newest_first: bool = False) -> SearchTarget:
        """The file(s) one search covers, its first batch opened: a file; a file and its
        rotations; or every file a glob entry matches. Of a glob or rotations the
        max_glob_files most recently modified are chosen (the others are left out,
        reported), searched oldest first, or newest first if asked. Only one file is
        opened per name, and only a batch at a time, so a call holds at most
        MAX_SEARCH_FILES descriptors however large max_glob_files is."""
        path = check_path_text(value)
        found = self._match(path)
        if found is not None and found[0].entry.is_glob and found[0].entry.path == path:
            # Unusable members too (symlinks, FIFOs, directories): each is then skipped with its reason.
            sizes: dict[str, int] = {}
            members = sorted(glob_members(found[0], unusable=True, sizes=sizes))
            return self._open_chosen(path, [name for _, name in members], newest_first, sizes)
        if found is not None and found[0].entry.rotations and found[0].entry.path == path:
            sizes = {path: self._literal_size(found[0])}
            rotations = self._rotations(found[0], MAX_ROTATIONS, sizes)
            return self._open_chosen(path, [*rotations, path], newest_first, sizes)
        _, fd = self.open(path)
        return SearchTarget(path, [OpenedLog(path, fd, path.endswith(".gz"), os.fstat(fd).st_mtime)], chosen=1)

    def _open_chosen(
        self, shown: str, oldest_first: list[str], newest_first: bool, sizes: dict[str, int]
    ) -> SearchTarget:
        target = choose(shown, oldest_first, newest_first, sizes, self._max_glob_files, "log_path")
        self.open_next(target)
        return first_batch_or_refuse(target, "log_path")

    def open_next(self, target: SearchTarget) -> None:
        """Open the target's next batch in place (the previous one must be closed): up to
        MAX_SEARCH_FILES usable files; each unusable one is skipped with its reason."""
        open_batch(target, lambda path: self.open(path)[1], MAX_SEARCH_FILES)

    def _rotations(self, pinned: PinnedEntry, limit: int, sizes: dict[str, int] | None = None) -> list[str]:
        """NAME.N and NAME.N.gz beside a literal entry's file: oldest (highest N) first,
        at most `limit` of the newest, as the client names them (`sizes` gets their sizes)."""
        if pinned.dirfd is None:
            return []
        base = pinned.name
        found = sorted(
            (int(ROTATION.fullmatch(name[len(base) :]).group(1)), pinned.entry.path + name[len(base) :], st.st_size)  # type: ignore[union-attr]
            for name, st in scan(pinned.dirfd, "", functools.partial(_is_rotation_of, base))
            if servable(st)
        )
        if sizes is not None:
            sizes.update((name, size) for _, name, size in found[:limit])
        return [name for _, name, _ in reversed(found[:limit])]

    def logs(self) -> list[AllowedLog]:
        """Every allowlisted file that exists now and could be served (globs expanded, bounded)."""
        found: dict[str, AllowedLog] = {}
        for pinned in self.pinned:
            if pinned.entry.is_glob:
                paths = sorted(name for _, name in glob_members(pinned))[: self._max_glob_files]
            else:
                paths = [pinned.entry.path] if self._literal_exists(pinned) else []
            for path in paths:
                found.setdefault(path, AllowedLog(path, pinned.entry.description))
        return list(found.values())

    def files(self, pinned: PinnedEntry) -> list[str]:
        """The servable files an entry covers now, named relative to its pinned directory
        (globs bounded like logs()), for the ownership checks in broker/files/log_dir_modes.py."""
        if pinned.entry.is_glob:
            return sorted(_below(pinned.shown, path) for _, path in glob_members(pinned))[: self._max_glob_files]
        rotations = self._rotations(pinned, self._max_glob_files) if pinned.entry.rotations else []
        names = [pinned.name + path[len(pinned.entry.path) :] for path in rotations]
        return [*names, pinned.name] if self._literal_exists(pinned) else names

    def _literal_size(self, pinned: PinnedEntry) -> int:
        """A literal entry's file size as listed (0 if it cannot be stat'ed now)."""
        if pinned.dirfd is None:
            return 0
        try:
            return os.stat(pinned.name, dir_fd=pinned.dirfd, follow_symlinks=False).st_size
        except OSError:
            return 0

    def _literal_exists(self, pinned: PinnedEntry) -> bool:
        if pinned.dirfd is None:
            return False
        try:
            return servable(os.stat(pinned.name, dir_fd=pinned.dirfd, follow_symlinks=False))
        except OSError:
            return False

    def open(self, value: object, name: str = "log_path") -> tuple[str, int]:
        """Validate a client-supplied path and return (path, read-only fd)."""
        path = check_path_text(value, name)
        found = self._match(path)
        if found is None:
            raise ToolError(self.refusal(path, name))
        return path, open_file(*found, name)

    def refusal(self, path: str, name: str = "log_path") -> str:
        """Why `path` is refused, naming the closest policy entries. Only the policy's own
        names are offered (never a file found on disk): they are what the client may name."""
        near = closest(path[:CLOSEST_CHARS], self._names)
        hint = CLOSEST_HINT + ", ".join(near) if near else ""
        return NOT_ALLOWED.replace("log_path", name) + hint

    def covered(self, pinned: PinnedEntry) -> list[str]:
        """The servable files one entry covers now, as the client names them, newest first:
        a glob's most recently modified members, or a file and then its rotations .1, .2.gz, ...
        At most max_glob_files, the files a search of the entry would cover."""
        limit = self._max_glob_files
        if pinned.entry.is_glob:
            return [path for _, path in sorted(glob_members(pinned), reverse=True)][:limit]
        rotations = self._rotations(pinned, limit)[::-1] if pinned.entry.rotations else []
        live = [pinned.entry.path] if self._literal_exists(pinned) else []
        return [*live, *rotations][:limit]

    def facts(self, path: str) -> FileFacts | None:
        """Size and modification time of one allowlisted file, from fstat on a descriptor
        opened exactly as a search opens it (beneath the pinned directory, no symlink
        followed); None when it cannot be served right now."""
        try:
            _, fd = self.open(path)
        except ToolError:
            return None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return FileFacts(path, st.st_size, st.st_mtime, path.endswith(".gz"))


def _close_all(pinned: list[PinnedEntry]) -> None:
    for entry in pinned:
        if entry.dirfd is not None:
            os.close(entry.dirfd)
    pinned.clear()
