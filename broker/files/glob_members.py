"""The files a glob entry matches now, found one pattern segment at a time beneath the
directory its entry pinned at load, without following any symlink."""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable

from broker.files.log_path_text import segment_matches
from broker.files.no_follow_open import open_beneath
from broker.files.opened_files import servable
from broker.files.pinned_entry import PinnedEntry

LISTING_FLAGS = os.O_RDONLY | os.O_DIRECTORY


def scan(
    dirfd: int, relative: str, wanted: Callable[[str], bool], symlinks: bool = False
) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of the wanted names in a directory beneath `dirfd`, reached without
    following symlinks ([] if it is gone or unreadable: a glob then matches nothing there).
    Symlinks themselves are left out unless asked for (to be reported, never followed)."""
    try:
        fd = open_beneath(dirfd, relative or ".", LISTING_FLAGS)
    except OSError:
        return []
    found = []
    try:
        with os.scandir(fd) as entries:
            for item in entries:
                if wanted(item.name) and (symlinks or not item.is_symlink()):
                    found.append((item.name, item.stat(follow_symlinks=False)))
    except OSError:  # the directory or an entry vanished meanwhile
        pass
    finally:
        os.close(fd)
    return found


def glob_members(
    pinned: PinnedEntry, unusable: bool = False, sizes: dict[str, int] | None = None
) -> list[tuple[float, str]]:
    """(mtime, path as the client names it) of each servable file a glob entry matches
    now; symlinks, to files or directories, are skipped. With `unusable`, the last
    segment's symlinks and other unservable names are kept too, for a search to report.
    `sizes`, if given, gets each member's size as listed."""
    if pinned.dirfd is None:
        return []
    dirfd = pinned.dirfd
    *directories, last = pinned.name.split("/")
    levels = [""]
    for want in directories:
        levels = [
            os.path.join(relative, name)
            for relative in levels
            for name, st in scan(dirfd, relative, functools.partial(segment_matches, want=want))
            if stat.S_ISDIR(st.st_mode)
        ]
    members = []
    for relative in levels:
        for name, st in scan(dirfd, relative, functools.partial(segment_matches, want=last), unusable):
            if unusable or servable(st):
                members.append((st.st_mtime, os.path.join(pinned.shown, relative, name)))
                if sizes is not None:
                    sizes[members[-1][1]] = st.st_size
    return members
