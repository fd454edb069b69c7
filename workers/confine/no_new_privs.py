"""Layer: no_new_privs, so no exec can ever gain privileges (setuid, file caps).

It is also what lets an unprivileged process install Landlock and seccomp.
"""

from __future__ import annotations

from workers.confine import syscalls
from workers.confine.layer import LayerError


def apply() -> None:
    try:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
        if syscalls.prctl(syscalls.PR_GET_NO_NEW_PRIVS) != 1:
            raise LayerError("no_new_privs", "the flag did not stick")
    except OSError as exc:
        raise LayerError("no_new_privs", exc.strerror or str(exc)) from None
