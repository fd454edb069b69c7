"""Like OpenSSH's StrictModes: who besides root can change an allowlisted log.

Opening never follows a link, so a user who can write a log's directory can no
longer make the broker read a file it could not read itself; it can still hide
a log, swap in files of its own, or (the file's owner) write what the log says.
An operator should know who that is. `bastion doctor` and the start-up log name
each such log; with `[sandbox] strict_modes = true` the server refuses to start.
Trusted: root, and the broker's own uid when it does not run as root.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from broker.files.allowlist import Allowlist
from broker.files.pinned_entry import PinnedEntry

SHOWN_PER_LOG = 10  # findings printed per log; the rest are counted

DIRECTORY = (
    "can replace files in {path}: with no-follow opening that user can only hide logs or swap in files it controls,"
    " not make the broker read others"
)
ANCESTOR = (
    "can replace {path} before the next start,"
    " and so choose the directory the broker pins then (a symlink there is still refused)"
)
FILE = "can rewrite {path}: what it says is only that user's word"


@dataclass(frozen=True)
class Finding:
    log: str  # the entry's path, as the policy names it
    text: str  # who can do what, for the operator


def trusted_uids() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def describe_user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def describe_group(gid: int) -> str:
    try:
        return f"group {gid} ({grp.getgrgid(gid).gr_name})"
    except KeyError:
        return f"group {gid}"


def writers(st: os.stat_result, trusted: frozenset[int]) -> list[str]:
    """Who other than a trusted uid may write (an owner may always chmod, so an owner counts)."""
    who = []
    if st.st_uid not in trusted:
        who.append(describe_user(st.st_uid))
    if st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        who.append(describe_group(st.st_gid))
    if st.st_mode & stat.S_IWOTH:
        who.append("every user")
    return who


def _ancestors(real: str, trusted: frozenset[int]) -> Iterator[str]:
    """Directories above the pinned one: writable, they decide what the next load pins.
    A sticky one (like /tmp) is fine when a trusted uid owns the entry below it."""
    current = "/"
    for part in [part for part in real.split("/") if part]:
        child = os.path.join(current, part)
        try:
            above, below = os.lstat(current), os.lstat(child)
        except OSError:
            return
        who = writers(above, trusted)
        if who and not (above.st_mode & stat.S_ISVTX and below.st_uid in trusted):
            yield f"{' and '.join(who)} {ANCESTOR.format(path=child)}"
        current = child


def _beneath(pinned: PinnedEntry, files: list[str], trusted: frozenset[int]) -> Iterator[str]:
    """The pinned directory, any directory between it and a file, and the files themselves."""
    assert pinned.dirfd is not None
    directories = {""} | {
        "/".join(name.split("/")[:depth]) for name in files for depth in range(1, name.count("/") + 1)
    }
    for relative in sorted(directories):
        try:
            st = os.stat(relative or ".", dir_fd=pinned.dirfd, follow_symlinks=False)
        except OSError:
            continue
        who = writers(st, trusted)
        if who:
            yield f"{' and '.join(who)} {DIRECTORY.format(path=os.path.join(pinned.real, relative).rstrip('/'))}"
    for name in files:
        try:
            st = os.stat(name, dir_fd=pinned.dirfd, follow_symlinks=False)
        except OSError:
            continue
        who = writers(st, trusted)
        if who:
            yield f"{' and '.join(who)} {FILE.format(path=os.path.join(pinned.real, name))}"


def find(allowlist: Allowlist, trusted: frozenset[int] | None = None) -> list[Finding]:
    """Every way someone other than root can change an allowlisted log or journal file, one per line."""
    trusted = trusted_uids() if trusted is None else trusted
    found: list[Finding] = []
    for pinned in allowlist.pinned:
        if pinned.dirfd is None:
            continue
        texts = [*_ancestors(pinned.real, trusted), *_beneath(pinned, allowlist.files(pinned), trusted)]
        found += [Finding(pinned.entry.path, text) for text in texts]
    journals = allowlist.journals
    for name, source in journals.sources.items():
        directory = source.pins[0]  # every pattern of a directory source shares its descriptor
        if directory.dirfd is None:
            continue
        files = [os.path.relpath(path, directory.shown) for path in journals.covered(source)]
        texts = [*_ancestors(directory.real, trusted), *_beneath(directory, files, trusted)]
        found += [Finding(f"journal source {name}", text) for text in texts]
    return found


def report(findings: list[Finding]) -> list[str]:
    """Lines for the operator, at most SHOWN_PER_LOG per log."""
    lines: list[str] = []
    for log in dict.fromkeys(finding.log for finding in findings):
        texts = [finding.text for finding in findings if finding.log == log]
        lines += [f"{log}: {text}" for text in texts[:SHOWN_PER_LOG]]
        if len(texts) > SHOWN_PER_LOG:
            lines.append(f"{log}: ... and {len(texts) - SHOWN_PER_LOG} more")
    return lines
