"""Sandbox profiles: one TOML file per worker kind in sandbox_profiles/.

A profile declares everything about how a worker kind is confined: which
namespaces it gets, what its (empty, read-only) filesystem contains, resource
and cgroup limits, Landlock scopes and its seccomp syscall allowlist. Each
layer is `required` (cannot apply -> refuse to serve) or `best_effort`
(cannot apply -> logged and audited downgrade). The broker turns a profile
into a host-specific plan (broker/sandbox/plan.py) that the worker applies.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Literal, get_args

import msgspec
from msgspec import Meta

from bastion_wire.plan import Cgroup, Requirement, Rlimits

Namespace = Literal["mount", "pid", "net", "ipc", "uts", "cgroup"]
Scope = Literal["abstract_unix_socket", "signal"]

# The layers, in the fixed order workers/confine/order.py applies them.
LayerName = Literal[
    "session",
    "fd_hygiene",
    "environment",
    "cgroup",
    "namespaces",
    "filesystem",
    "capabilities",
    "identity",
    "rlimits",
    "no_new_privs",
    "landlock",
    "seccomp",
]
LAYER_ORDER: tuple[str, ...] = get_args(LayerName)


class ProfileError(Exception):
    """A profile file is missing or invalid; the message names the key."""


class Namespaces(msgspec.Struct, forbid_unknown_fields=True):
    # A user namespace is added automatically when the broker is not root.
    unshare: list[Namespace] = msgspec.field(default_factory=lambda: ["mount", "pid", "net", "ipc", "uts", "cgroup"])
    # The "net" namespace is one empty namespace the launcher makes once and every worker
    # it forks is born in, instead of a new one per worker (~1 ms of kernel work each, with
    # its teardown). Allowed only where a worker cannot use it: see _check_shared_net.
    shared_net: bool = False


# Every way to make, name or reach a socket endpoint. A profile that shares a network
# namespace must refuse all of them, so its workers hold no socket but their channel.
NET_ENDPOINT_SYSCALLS = frozenset({"socket", "socketpair", "connect", "bind", "listen", "accept", "accept4"})


class Filesystem(msgspec.Struct, forbid_unknown_fields=True):
    # Extra files or directories bound read-only into the worker's empty root.
    # The profile's executables and the shared libraries they load are added
    # by the broker; nothing else exists (no /etc, /home, /proc, /dev, logs).
    read_only: list[str] = msgspec.field(default_factory=list)
    tmpfs_bytes: Annotated[int, Meta(ge=4096, le=16 << 20)] = 65536


class Landlock(msgspec.Struct, forbid_unknown_fields=True):
    # Filesystem rules are derived from the profile: executables and their
    # libraries may be read and executed, filesystem.read_only entries read;
    # every other access is denied, as are TCP bind and connect.
    scopes: list[Scope] = msgspec.field(default_factory=lambda: ["abstract_unix_socket", "signal"])


class SeccompCondition(msgspec.Struct, forbid_unknown_fields=True):
    """Allow `syscall` only when argument `arg` satisfies the condition.

    Either `values` (argument equals one of them) or `mask` + `equals`
    (argument & mask == equals).
    """

    syscall: str
    arg: Annotated[int, Meta(ge=0, le=5)]
    values: list[int] = msgspec.field(default_factory=list)
    mask: int | None = None
    equals: int = 0


class Seccomp(msgspec.Struct, forbid_unknown_fields=True):
    allow: list[str]
    # Syscalls that fail with an errno instead of killing (e.g. clone3 -> ENOSYS
    # so libc falls back to clone, which the conditions can inspect).
    errno: dict[str, str] = msgspec.field(default_factory=dict)
    conditional: list[SeccompCondition] = msgspec.field(default_factory=list)


class Layers(msgspec.Struct, forbid_unknown_fields=True):
    session: Requirement = "required"
    fd_hygiene: Requirement = "required"
    environment: Requirement = "required"
    cgroup: Requirement = "required"
    namespaces: Requirement = "required"
    filesystem: Requirement = "required"
    capabilities: Requirement = "required"
    identity: Requirement = "required"
    rlimits: Requirement = "required"
    no_new_privs: Requirement = "required"
    landlock: Requirement = "required"
    seccomp: Requirement = "required"


class Profile(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str
    rlimits: Rlimits
    cgroup: Cgroup
    seccomp: Seccomp
    layers: Layers = msgspec.field(default_factory=Layers)
    namespaces: Namespaces = msgspec.field(default_factory=Namespaces)
    filesystem: Filesystem = msgspec.field(default_factory=Filesystem)
    landlock: Landlock = msgspec.field(default_factory=Landlock)
    # Programs the worker may execute (absolute paths), e.g. the search engine.
    executables: list[str] = msgspec.field(default_factory=list)
    # Programs it may execute if the host has them (e.g. ripgrep); left out otherwise.
    optional_executables: list[str] = msgspec.field(default_factory=list)


if Layers.__struct_fields__ != LAYER_ORDER:  # one list of layer names, checked at import
    raise ImportError("profile.Layers must list exactly LAYER_ORDER, in order")


def requirements(profile: Profile, downgraded: list[str]) -> dict[str, Requirement]:
    """Each layer's requirement after the policy's explicit best-effort downgrades."""
    return {name: "best_effort" if name in downgraded else getattr(profile.layers, name) for name in LAYER_ORDER}


def _check(profile: Profile, source: str) -> Profile:
    for key, paths in (
        ("executables", profile.executables),
        ("optional_executables", profile.optional_executables),
        ("filesystem.read_only", profile.filesystem.read_only),
    ):
        for path in paths:
            if not Path(path).is_absolute() or "\x00" in path:
                raise ProfileError(f"{source}: {key}: {path!r} must be an absolute path")
    if "execve" in profile.seccomp.allow and not profile.executables:
        raise ProfileError(f"{source}: seccomp.allow: execve is allowed but the profile has no executables")
    if profile.namespaces.shared_net:
        _check_shared_net(profile, source)
    return profile


def _check_shared_net(profile: Profile, source: str) -> None:
    """Workers in one network namespace must not be able to reach each other through it:
    no syscall that makes or reaches an endpoint (seccomp kills instead), and Landlock's
    abstract-socket scope as a second wall around the one socket they hold."""
    prefix = f"{source}: namespaces.shared_net"
    if "net" not in profile.namespaces.unshare:
        raise ProfileError(f'{prefix} needs "net" in namespaces.unshare')
    seccomp = profile.seccomp
    granted = NET_ENDPOINT_SYSCALLS & {*seccomp.allow, *seccomp.errno, *(rule.syscall for rule in seccomp.conditional)}
    if granted:
        raise ProfileError(f"{prefix} needs seccomp to refuse {', '.join(sorted(granted))}")
    if "abstract_unix_socket" not in profile.landlock.scopes:
        raise ProfileError(f"{prefix} needs landlock.scopes to include abstract_unix_socket")
    if profile.layers.seccomp != "required" or profile.layers.landlock != "required":
        raise ProfileError(f"{prefix} needs the seccomp and landlock layers required")


def decode_profile(data: bytes, source: str) -> Profile:
    try:
        return _check(msgspec.toml.decode(data, type=Profile), source)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProfileError(f"{source}: {exc}") from None


def _folder(directory: str | None) -> Traversable:  # a Path is one too
    return Path(directory) if directory else resources.files("sandbox_profiles")


def profile_names(directory: str | None = None) -> list[str]:
    try:
        return sorted(item.name[:-5] for item in _folder(directory).iterdir() if item.name.endswith(".toml"))
    except OSError as exc:
        raise ProfileError(f"cannot list profiles in {directory}: {exc.strerror}") from None


def load_profile(name: str, directory: str | None = None) -> Profile:
    """Load NAME.toml from the shipped sandbox_profiles/ (or an operator's directory)."""
    if name not in profile_names(directory):
        raise ProfileError(f"no sandbox profile named {name!r}")
    source = f"{directory or 'sandbox_profiles'}/{name}.toml"
    profile = decode_profile(_folder(directory).joinpath(f"{name}.toml").read_bytes(), source)
    if profile.name != name:
        raise ProfileError(f"{source}: name must be {name!r}")
    return profile
