"""The worker's end of its socket to the broker: frames out, one request in."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import msgspec

from bastion_wire.protocol import (
    MAX_JOURNAL_FILES,
    MAX_SEARCH_FILES,
    FrameReader,
    ProtocolError,
    encode_frame,
    to_worker_reader,
)

# A search over rotations or a glob, or a journal search; an intel request needs 3.
MAX_FDS = max(MAX_SEARCH_FILES, MAX_JOURNAL_FILES)
Send = Callable[[msgspec.Struct], None]  # how a worker kind sends its replies: Channel.send


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader: FrameReader = to_worker_reader()

    def send(self, message: msgspec.Struct) -> None:
        self._sock.sendall(encode_frame(message))

    def wait_closed(self) -> None:
        """Block until the broker closes its end (or kills us); whatever arrives is ignored."""
        while self._sock.recv(4096):
            pass

    def close(self) -> None:
        # Explicitly: finalizing an open socket formats its repr (getsockname),
        # a syscall the seccomp allowlist has no reason to permit.
        self._sock.close()

    def receive(self) -> tuple[msgspec.Struct, list[int]]:
        """Block until one whole message has arrived; return it with any passed fds."""
        fds: list[int] = []
        while True:
            data, new_fds, flags, _addr = socket.recv_fds(self._sock, 65536, MAX_FDS)
            for fd in new_fds:
                os.set_inheritable(fd, False)
            fds.extend(new_fds)
            if flags & socket.MSG_CTRUNC:
                raise ProtocolError("more descriptors than a request may carry")
            if not data:
                raise ProtocolError("broker closed the channel")
            messages = self._reader.feed(data)
            if len(messages) > 1 or len(fds) > MAX_FDS:
                raise ProtocolError("more than one message, or too many descriptors, at once")
            if messages:
                return messages[0], fds
