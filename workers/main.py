"""Worker entry point: confine, announce readiness, serve exactly one request.

Started by the broker as `python -I -S -c BOOT CHANNEL_FD BROKER_PID PATH...`
with an empty environment. Everything the worker will ever need is imported
before it confines itself; after that it trusts nothing it reads.
Exit status: 0 served, 65 protocol error, 70 sandbox set-up failed.
"""

from __future__ import annotations

import os
import socket
import sys

from broker.sandbox.confine import confine
from broker.sandbox.layer import LayerError
from broker.sandbox.profile import Profile, profile_from_wire
from workers.channel import Channel
from workers.protocol import (
    PROTOCOL_VERSION,
    Failed,
    ProtocolError,
    Ready,
    SearchRequest,
    Setup,
    SetupFailed,
    TailRequest,
)
from workers.search import search
from workers.tail import tail

EXIT_PROTOCOL = 65
EXIT_SETUP = 70


def _set_up(channel: Channel, channel_fd: int, broker_pid: int) -> Setup:
    setup, fds = channel.receive()
    if not isinstance(setup, Setup) or fds or setup.version != PROTOCOL_VERSION:
        raise ProtocolError("expected a Setup frame of this protocol version")
    profile = profile_from_wire(setup.profile)
    layers = confine(profile, keep_fds={channel_fd}, expected_parent=broker_pid)
    channel.send(Ready(version=PROTOCOL_VERSION, layers=layers))
    return setup


def _serve(channel: Channel, setup: Setup, profile: Profile) -> None:
    request, fds = channel.receive()
    if len(fds) != 1:
        raise ProtocolError("a request must carry exactly one descriptor")
    if setup.kind == "grep" and isinstance(request, SearchRequest) and profile.executables:
        search(request, fds[0], profile.executables[0], channel.send)
    elif setup.kind == "resource" and isinstance(request, TailRequest):
        tail(request, fds[0], channel.send)
    else:
        channel.send(Failed("bad_request", f"a {setup.kind} worker cannot serve this request"))


def main(argv: list[str]) -> int:
    channel_fd, broker_pid = int(argv[0]), int(argv[1])
    channel = Channel(socket.socket(fileno=channel_fd))
    try:
        setup = _set_up(channel, channel_fd, broker_pid)
    except LayerError as exc:
        channel.send(SetupFailed(layer=exc.layer, reason=exc.reason))
        return EXIT_SETUP
    except ProtocolError:
        return EXIT_PROTOCOL
    try:
        _serve(channel, setup, profile_from_wire(setup.profile))
    except (ProtocolError, BrokenPipeError, ConnectionResetError):
        return EXIT_PROTOCOL
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
