"""Worker kind "grep": search one handed-over descriptor with GNU grep -E.

grep reads the descriptor as its stdin, so no path is ever opened, and it
stops by itself after max_lines + 1 matches (-m): the extra match only tells
us whether more exist. The pattern is passed with -e, so it can never be read
as an option. Output is split into capped lines, sanitized and sent in batches.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from workers.lines import LineSplitter
from workers.protocol import Done, Failed, Line, Lines, SearchRequest
from workers.sanitize import clean_line, clean_text

BATCH_LINES = 256
BATCH_BYTES = 256 * 1024
READ_CHUNK = 256 * 1024
MAX_STDERR = 4096

Send = Callable[[object], None]


def grep_argv(grep: str, request: SearchRequest) -> list[str]:
    return [grep, "-E", "-a", "-n", "-m", str(request.max_lines + 1), "-e", request.pattern]


def _spawn(grep: str, request: SearchRequest, log_fd: int) -> tuple[int, int, int]:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, log_fd, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    pid = os.posix_spawn(grep, grep_argv(grep, request), {}, file_actions=actions)
    os.close(out_w)
    os.close(err_w)
    return pid, out_r, err_r


def _parse(prefix: bytes, length: int) -> tuple[int, bytes, int]:
    """Split grep's 'N:text' into (N, text prefix, text length)."""
    number, _, text = prefix.partition(b":")
    return int(number), text, length - len(number) - 1


def search(request: SearchRequest, log_fd: int, grep: str, send: Send) -> None:
    pid, out_r, err_r = _spawn(grep, request, log_fd)
    os.close(log_fd)
    splitter = LineSplitter(request.max_line_bytes + 24)  # room for the "N:" prefix
    batch: list[Line] = []
    batch_bytes = 0
    count = 0
    more = False
    while not more:
        chunk = os.read(out_r, READ_CHUNK)
        lines = splitter.feed(chunk) if chunk else splitter.finish()
        for prefix, length in lines:
            if count == request.max_lines:
                more = True
                break
            number, text, text_length = _parse(prefix, length)
            line = Line(number, clean_line(text[: request.max_line_bytes], text_length))
            batch.append(line)
            batch_bytes += len(line.text)
            count += 1
            if len(batch) >= BATCH_LINES or batch_bytes >= BATCH_BYTES:
                send(Lines(batch))
                batch, batch_bytes = [], 0
        if not chunk:
            break
    if batch:
        send(Lines(batch))
    os.close(out_r)
    errors = os.read(err_r, MAX_STDERR)
    os.close(err_r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code in (0, 1) or more:
        send(Done(more=more))
    elif code < 0:
        send(Failed("engine_killed", signal.Signals(-code).name))
    else:
        send(Failed("engine_error", clean_text(errors).strip()[:500] or f"grep exited with {code}"))
