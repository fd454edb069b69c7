"""Broker side of the filesystem layer: what a worker's empty root contains.

The broker lists what a worker kind may see: its executables, the shared
libraries they load (found with the dynamic loader's --list) and any extra
read-only paths from the profile. The worker binds exactly those, read-only,
into its empty root (workers/confine/filesystem.py).
"""

from __future__ import annotations

import subprocess

PT_INTERP = 3


def _interpreter(executable: str) -> str | None:
    """The ELF program interpreter (dynamic loader) of a 64-bit executable, or None if static."""
    with open(executable, "rb") as file:
        header = file.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            raise ValueError(f"{executable} is not a 64-bit little-endian ELF file")
        phoff = int.from_bytes(header[0x20:0x28], "little")
        phentsize = int.from_bytes(header[0x36:0x38], "little")
        phnum = int.from_bytes(header[0x38:0x3A], "little")
        for index in range(phnum):
            file.seek(phoff + index * phentsize)
            entry = file.read(phentsize)
            if int.from_bytes(entry[0:4], "little") == PT_INTERP:
                offset = int.from_bytes(entry[8:16], "little")
                size = int.from_bytes(entry[32:40], "little")
                file.seek(offset)
                return file.read(size).rstrip(b"\x00").decode()
    return None


def shared_libraries(executable: str) -> list[str]:
    """The loader and libraries `executable` needs, as the loader resolves them."""
    loader = _interpreter(executable)
    if loader is None:
        return []
    listing = subprocess.run([loader, "--list", executable], capture_output=True, env={}, timeout=10, check=True)
    found = [loader]
    for line in listing.stdout.decode().splitlines():
        parts = line.split()
        if "=>" in parts and parts[parts.index("=>") + 1].startswith("/"):
            found.append(parts[parts.index("=>") + 1])
        elif parts and parts[0].startswith("/"):
            found.append(parts[0])
    return sorted(set(found))


def bind_list(executables: list[str], read_only: list[str]) -> list[str]:
    """Every path the worker's root contains, each bound read-only at the same place."""
    paths: set[str] = set()
    for executable in executables:
        paths.add(executable)
        paths.update(shared_libraries(executable))
    paths.update(read_only)
    return sorted(paths)
