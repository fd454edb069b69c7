"""Where Bastion writes its own state when the policy says `${state}/...`.

The example policy ships inside a wheel's prefix, which an ordinary user cannot
write; paths relative to the policy file would point there. So the paths Bastion
writes (audit.path, intel.database) may start with `${state}/`, resolved as:
--state-dir DIR, else systemd's $STATE_DIRECTORY (StateDirectory=), else
$XDG_STATE_HOME/bastion, else ~/.local/state/bastion. Nothing is resolved (and
$HOME is never consulted) for a policy that does not use the token.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

TOKEN = "${state}"


class StateDirError(ValueError):
    """No state directory can be determined, or the token is misplaced."""


def state_directory(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit).absolute()
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd.startswith("/"):
        return Path(systemd)
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if xdg.startswith("/"):  # the XDG spec says relative values are to be ignored
        return Path(xdg) / "bastion"
    return _home() / ".local" / "state" / "bastion"


def _home() -> Path:
    home = os.environ.get("HOME", "")
    if home.startswith("/"):
        return Path(home)
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        raise StateDirError("no home directory for this user: pass --state-dir DIR") from None


def expand(value: str, explicit: str | None = None) -> str:
    """`${state}/audit.jsonl` -> <state directory>/audit.jsonl; other values unchanged."""
    if value == TOKEN or value.startswith(TOKEN + "/"):
        return str(state_directory(explicit)) + value[len(TOKEN) :]
    if TOKEN in value:
        raise StateDirError(f"{TOKEN} may only start the path")
    return value
