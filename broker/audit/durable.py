"""Small helpers for files that must survive a crash (audit log, intel database)."""

from __future__ import annotations

import os


def sync_directory(directory: str) -> None:
    """fsync a directory so a file created or renamed in it is durable."""
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
