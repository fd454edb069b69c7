"""systemd readiness notification (Type=notify), without a dependency.

READY=1 is sent once the policy, the audit log and every worker sandbox are
set up, STOPPING=1 when a signal starts the drain; RELOADING=1 (with MONOTONIC_USEC,
which systemd >= 253 wants) then READY=1 again around a policy reload (SIGHUP). Outside systemd
(no NOTIFY_SOCKET) this does nothing. Workers never see the variable: they
start with an empty environment.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("bastion.sd_notify")


def sd_notify(state: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)
