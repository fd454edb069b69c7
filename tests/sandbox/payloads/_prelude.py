"""Prelude of every Python payload (the harness prepends it, then PARAMS, then the payload).

The text runs via exec() inside the confined worker itself, after every
layer: only modules the worker had already imported can be imported (its
root is empty). `handed_fd` is 3 when a file was handed over, else None.
Each payload ends through report(): one result line on stdout, then exit
99 for ESCAPED and 0 otherwise.
"""

import errno
import os
from collections.abc import Callable


def report(kind: str, detail: str) -> None:
    os.write(1, f"{kind} {detail}\n".encode(errors="replace"))
    raise SystemExit(99 if kind == "ESCAPED" else 0)


def error_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def attempt(action: Callable[[], object], what: str) -> None:
    """Run one forbidden action: an OSError means BLOCKED, returning means ESCAPED."""
    try:
        result = action()
    except OSError as exc:
        report("BLOCKED", error_name(exc))
    report("ESCAPED", f"{what}: {result!r}"[:200])
