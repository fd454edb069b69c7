"""Bastion's log lines on stderr, and through it in journald.

Under systemd, stderr is a journal stream whose device and inode JOURNAL_STREAM
names. journald takes a leading "<N>" on each line as that line's syslog
priority (sd-daemon(3)), so a warning is stored at 4 and `journalctl -p warning`
finds it; without the prefix every line is stored at 6 (info). Elsewhere, a
terminal or a file, the lines stay plain.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "bastion: %(levelname)s %(message)s"

# logging level -> syslog priority (<2> crit, <3> err, <4> warning, <6> info, <7> debug)
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return 7


def stderr_is_journal(environ: dict[str, str] | None = None, fd: int = 2) -> bool:
    """JOURNAL_STREAM is "DEVICE:INODE" of the stream systemd connected; it must be this
    stderr still, not one inherited by a child that redirected its stderr elsewhere."""
    device, _, inode = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


class JournalFormatter(logging.Formatter):
    """Every line of a record starts with its priority: journald makes one entry per line."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def configure(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(FORMAT) if stderr_is_journal() else logging.Formatter(FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
