"""Worker kind "resource": the last max_bytes of a handed-over descriptor.

When the file is larger than max_bytes, the first (partial) line of the tail
is dropped so every returned line is whole.
"""

from __future__ import annotations

import os

from bastion_wire.protocol import Done, TailRequest, Text
from workers.channel import Send
from workers.lines import LineSplitter
from workers.sanitize import clean_line

CHUNK = 256 * 1024
FRAME_TEXT = 256 * 1024


def tail(request: TailRequest, log_fd: int, send: Send) -> None:
    size = os.fstat(log_fd).st_size
    offset = max(0, size - request.max_bytes)
    skip_partial = offset > 0
    splitter = LineSplitter(request.max_line_bytes)
    pending: list[str] = []
    pending_bytes = 0
    while offset < size:
        chunk = os.pread(log_fd, min(CHUNK, size - offset), offset)
        if not chunk:
            break  # the file shrank while we read it
        offset += len(chunk)
        for raw, length in splitter.feed(chunk):
            if skip_partial:
                skip_partial = False
                continue
            pending.append(clean_line(raw, length))
            pending_bytes += len(pending[-1]) + 1
            if pending_bytes >= FRAME_TEXT:
                send(Text("\n".join(pending) + "\n"))
                pending, pending_bytes = [], 0
    if not skip_partial:  # else the only line seen was the partial first one
        pending.extend(clean_line(raw, length) for raw, length in splitter.finish())
    if pending:
        send(Text("\n".join(pending) + "\n"))
    os.close(log_fd)
    send(Done(more=size > request.max_bytes))
