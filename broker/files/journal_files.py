"""The policy's [[journals]] sources: the journal files query_journal may read, opened as
[[logs]] files are (broker/files/opened_files.py): beneath the source's directory, pinned
at load, no symlink followed, only regular files with one name.

A directory source covers DIR/*.journal and DIR/*/*.journal, with the *.journal~ files
journald leaves after an unclean shutdown: the local /var/log/journal keeps its files in
a machine-id directory, a systemd-journal-remote output directory one file (and its
archives) per host. A file source covers that one file. Clients name a source, never a
file: which files it covers is decided here, from the directory as it is at call time.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from bastion_wire.protocol import MAX_JOURNAL_FILES
from broker.errors import ToolError
from broker.files.glob_members import glob_members
from broker.files.log_path_text import segments_match
from broker.files.opened_files import SearchTarget, choose, first_batch_or_refuse, open_batch, open_file, servable
from broker.files.pinned_entry import PinnedEntry, pin
from broker.policy import JOURNAL_SUFFIXES, JournalSource, LogEntry, Policy

DIRECTORY_PATTERNS = tuple(f"{level}*{suffix}" for level in ("", "*/") for suffix in JOURNAL_SUFFIXES)
UNKNOWN = "source is not a journal source of this server (list_logs lists them)"


@dataclass(frozen=True)
class PinnedSource:
    source: JournalSource
    pins: tuple[PinnedEntry, ...]  # a file source's one entry, or one per DIRECTORY_PATTERNS on the same descriptor

    @property
    def problem(self) -> str:
        return self.pins[0].problem if self.pins[0].dirfd is None else ""


def _pin_source(source: JournalSource, key: str) -> PinnedSource:
    entry = LogEntry(path=source.path, follow_symlinks=source.follow_symlinks)
    if source.is_file:
        return PinnedSource(source, (pin(entry, key),))
    first, *others = (os.path.join(source.path, pattern) for pattern in DIRECTORY_PATTERNS)
    pinned = pin(LogEntry(path=first, follow_symlinks=source.follow_symlinks), key)
    rest = [
        dataclasses.replace(pinned, entry=LogEntry(path=path), name=os.path.relpath(path, pinned.shown))
        for path in others
    ]
    return PinnedSource(source, (pinned, *rest))


class JournalFiles:
    """Every [[journals]] source, its directory pinned at load (PolicyError for a symlink
    it may not follow; a directory that cannot be opened leaves the source inert)."""

    def __init__(self, policy: Policy) -> None:
        sources: list[PinnedSource] = []
        self._finalizer = weakref.finalize(self, _close_all, sources)
        for index, source in enumerate(policy.journals):
            sources.append(_pin_source(source, f"journals[{index}].path"))
        self.sources: dict[str, PinnedSource] = {pinned.source.name: pinned for pinned in sources}
        self._max_files = policy.limits.max_glob_files
        self._owner: JournalFiles | None = None

    def close(self) -> None:
        if self._owner is None:
            self._finalizer()

    def restricted(self, keep: Callable[[JournalSource], bool]) -> JournalFiles:
        """A view with only the sources `keep` admits (a client's scope)."""
        view = copy.copy(self)
        view.sources = {name: pinned for name, pinned in self.sources.items() if keep(pinned.source)}
        view._owner = self._owner or self  # keeps the descriptors open while the view is in use
        return view

    def notes(self) -> list[str]:
        """Sources left inert at load, for the operator."""
        return [f"{name}: not served until a restart: {p.problem}" for name, p in self.sources.items() if p.problem]

    def source(self, name: object) -> PinnedSource:
        found = self.sources.get(name) if isinstance(name, str) else None
        if found is None:
            raise ToolError(UNKNOWN)
        return found

    def _members(self, pinned: PinnedSource, sizes: dict[str, int] | None = None) -> list[tuple[float, str]]:
        """(mtime, path) of the files a source covers now, symlinks and other unusable names included."""
        if pinned.source.is_file:
            entry = pinned.pins[0]
            try:
                st = os.stat(entry.name, dir_fd=entry.dirfd, follow_symlinks=False) if entry.dirfd is not None else None
            except OSError:
                st = None
            if st is not None and sizes is not None:
                sizes[entry.entry.path] = st.st_size
            return [(st.st_mtime, entry.entry.path)] if st is not None else []
        found: dict[str, float] = {}
        for entry in pinned.pins:
            found.update((path, mtime) for mtime, path in glob_members(entry, unusable=True, sizes=sizes))
        return [(mtime, path) for path, mtime in found.items()]

    def covered(self, pinned: PinnedSource) -> list[str]:
        """The servable files a source covers now, newest first, at most max_glob_files."""
        usable = [(mtime, path) for mtime, path in self._members(pinned) if self._servable(pinned, path)]
        return [path for _, path in sorted(usable, reverse=True)][: self._max_files]

    def _servable(self, pinned: PinnedSource, path: str) -> bool:
        entry, relative = self._entry_of(pinned, path)
        try:
            return entry.dirfd is not None and servable(os.stat(relative, dir_fd=entry.dirfd, follow_symlinks=False))
        except OSError:
            return False

    def open_search(self, name: object) -> SearchTarget:
        """The files of one source, the most recently modified max_glob_files of them (the
        others left out, reported), its first batch of MAX_JOURNAL_FILES opened."""
        pinned = self.source(name)
        sizes: dict[str, int] = {}
        members = sorted(self._members(pinned, sizes))
        target = choose(pinned.source.name, [path for _, path in members], False, sizes, self._max_files, "source")
        self.open_next(target)
        return first_batch_or_refuse(target, "source")

    def open_next(self, target: SearchTarget) -> None:
        pinned = self.source(target.log_path)
        open_batch(target, lambda path: open_file(*self._entry_of(pinned, path), "source"), MAX_JOURNAL_FILES)

    def stat(self, pinned: PinnedSource, path: str) -> os.stat_result | None:
        """fstat of one of a source's files, opened as a search opens it; None if it cannot be now."""
        try:
            fd = open_file(*self._entry_of(pinned, path), "source")
        except ToolError:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def _entry_of(self, pinned: PinnedSource, path: str) -> tuple[PinnedEntry, str]:
        """The pinned entry covering `path` (one this module listed) and its name beneath it."""
        for entry in pinned.pins:
            if not entry.entry.is_glob and entry.entry.path == path:
                return entry, entry.name
            if entry.entry.is_glob and segments_match(entry.entry.path, path):
                return entry, path[len(entry.shown) :].lstrip("/")
        raise ToolError(UNKNOWN)


def _close_all(sources: list[PinnedSource]) -> None:
    for pinned in sources:
        if pinned.pins[0].dirfd is not None:  # the patterns of a directory share its descriptor
            os.close(pinned.pins[0].dirfd)
    sources.clear()
