"""Sandbox profiles: one TOML file per worker kind in sandbox_profiles/.

The broker decodes a profile, checks it, and sends it to the worker in its
Setup frame; the worker applies the layers it lists before reading any
request. Each layer is `required` (cannot apply -> refuse to serve) or
`best_effort` (cannot apply -> logged and audited downgrade).
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Requirement = Literal["required", "best_effort"]


class ProfileError(Exception):
    """A profile file is missing or invalid; the message names the key."""


class Rlimits(msgspec.Struct, forbid_unknown_fields=True):
    cpu_s: Annotated[int, Meta(ge=1, le=3600)]
    address_space_bytes: Annotated[int, Meta(ge=16 << 20)]
    open_files: Annotated[int, Meta(ge=8, le=4096)]
    processes: Annotated[int, Meta(ge=1, le=4096)]
    file_size_bytes: Annotated[int, Meta(ge=0)] = 0
    core_bytes: Annotated[int, Meta(ge=0)] = 0


class Layers(msgspec.Struct, forbid_unknown_fields=True):
    session: Requirement = "required"
    fd_hygiene: Requirement = "required"
    environment: Requirement = "required"
    rlimits: Requirement = "required"


class Profile(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str
    rlimits: Rlimits
    layers: Layers = msgspec.field(default_factory=Layers)
    # Programs the worker may execute (absolute paths), e.g. the search engine.
    executables: list[str] = msgspec.field(default_factory=list)


def decode_profile(data: bytes, source: str) -> Profile:
    try:
        return msgspec.toml.decode(data, type=Profile)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProfileError(f"{source}: {exc}") from None


def load_profile(name: str) -> Profile:
    """Load sandbox_profiles/NAME.toml as shipped with the package."""
    try:
        data = resources.files("sandbox_profiles").joinpath(f"{name}.toml").read_bytes()
    except (FileNotFoundError, OSError):
        raise ProfileError(f"no sandbox profile named {name!r}") from None
    profile = decode_profile(data, f"sandbox_profiles/{name}.toml")
    if profile.name != name:
        raise ProfileError(f"sandbox_profiles/{name}.toml: name must be {name!r}")
    return profile


def encode_profile(profile: Profile) -> bytes:
    return msgspec.msgpack.encode(profile)


def profile_from_wire(data: bytes) -> Profile:
    return msgspec.msgpack.decode(data, type=Profile)
