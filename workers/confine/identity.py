"""Layer: an unprivileged uid and gid with no supplementary groups.

As root the worker switches to the configured worker user (default: a
`bastion-worker` account if the host has one, else 65534, "nobody"). Without
root the user namespace already maps the worker's own uid to that id inside,
and this layer only verifies the result.
"""

from __future__ import annotations

import os

from workers.confine.layer import LayerError


def apply(uid: int, gid: int, user_namespace: bool) -> None:
    if uid == 0 or gid == 0:
        raise LayerError("identity", "workers never run as uid or gid 0")
    try:
        if not user_namespace:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise LayerError("identity", f"cannot switch to uid {uid} gid {gid}: {exc.strerror}") from None
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise LayerError("identity", f"still running as uids {os.getresuid()} gids {os.getresgid()}")
    if not user_namespace and os.getgroups():
        raise LayerError("identity", "supplementary groups remain")
