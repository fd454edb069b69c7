"""Broker side of the seccomp layer: compile a profile's allowlist with libseccomp.

libseccomp resolves syscall names for this architecture, generates the
architecture check (any non-native ABI, including x32, takes the kill
action) and emits the BPF program; nothing here assembles BPF by hand.

Two Python bindings of the same C library are accepted, in this order:
- libseccomp's official binding (Debian/Ubuntu package python3-seccomp),
  imported directly or, from a virtualenv on another CPython build, loaded
  from Debian's path when its ABI tag matches this interpreter;
- PyPI `pyseccomp` (a ctypes wrapper, a declared dependency), because
  libseccomp itself is on every Debian/Ubuntu (apt depends on it) while the
  official binding is a Debian-only package a fresh machine may not have.
Both emit the same program for the same rules (tests/test_seccomp_bindings.py).
The two report failures differently (RuntimeError from the official one,
OSError from pyseccomp, RuntimeError at import when the C library is
missing), so every failure is turned into one SeccompUnavailable with a
message that names the rule; the caller then refuses to serve.
"""

from __future__ import annotations

import errno
import importlib.machinery
import importlib.util
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from broker.sandbox.profile import Seccomp

DEBIAN_DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
MISSING = (
    "no libseccomp Python binding could be loaded: neither python3-seccomp nor PyPI pyseccomp "
    "(reinstall Bastion with its dependencies, e.g. `make venv`; pyseccomp also needs libseccomp2)"
)


class SeccompUnavailable(Exception):
    """libseccomp or its binding is missing, or the profile names an unknown syscall."""


def os_binding() -> ModuleType | None:
    """libseccomp's official binding, or None when this interpreter cannot load it."""
    try:
        import seccomp

        return cast(ModuleType, seccomp)  # no stubs (pyproject's mypy overrides): typed Any
    except ImportError:
        pass
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = DEBIAN_DIST_PACKAGES / f"seccomp{suffix}"
        if candidate.is_file() and suffix != ".so":  # only an ABI-tagged build is safe to load
            spec = importlib.util.spec_from_file_location("seccomp", candidate)
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                try:
                    spec.loader.exec_module(module)
                except ImportError:
                    return None
                return module
    return None


def pypi_binding() -> ModuleType | None:
    """PyPI pyseccomp, or None when it or the C library it wraps is missing."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError, OSError):  # RuntimeError: "Unable to find libseccomp"
        return None
    return cast(ModuleType, pyseccomp)  # no stubs either


def binding() -> ModuleType:
    """The binding compile_filter uses: the official one first, pyseccomp otherwise."""
    module = os_binding() or pypi_binding()
    if module is None:
        raise SeccompUnavailable(MISSING)
    return module


def binding_name(module: ModuleType) -> str:
    return "pyseccomp" if module.__name__ == "pyseccomp" else "python3-seccomp"


def compile_filter(rules: Seccomp, module: ModuleType | None = None) -> bytes:
    """BPF bytes (struct sock_filter[]) for the profile's rules."""
    sc = module or binding()
    try:
        ruleset = sc.SyscallFilter(defaction=sc.KILL_PROCESS)
        ruleset.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    except (RuntimeError, OSError, ValueError) as exc:
        raise SeccompUnavailable(f"libseccomp refused to create a filter ({binding_name(sc)}): {exc}") from None
    for name in rules.allow:
        _add(sc, ruleset, "allow", sc.ALLOW, name)
    for name, code in rules.errno.items():
        _add(sc, ruleset, "errno", sc.ERRNO(getattr(errno, code)), name)
    for condition in rules.conditional:
        if condition.mask is not None:
            _add(
                sc,
                ruleset,
                "conditional",
                sc.ALLOW,
                condition.syscall,
                sc.Arg(condition.arg, sc.MASKED_EQ, condition.mask, condition.equals),
            )
        for value in condition.values:
            _add(sc, ruleset, "conditional", sc.ALLOW, condition.syscall, sc.Arg(condition.arg, sc.EQ, value))
    with tempfile.TemporaryFile() as file:
        try:
            ruleset.export_bpf(file)
        except (RuntimeError, OSError) as exc:
            raise SeccompUnavailable(f"libseccomp could not export the filter ({binding_name(sc)}): {exc}") from None
        file.seek(0)
        return file.read()


def _add(sc: ModuleType, ruleset: Any, section: str, action: int, name: str, *args: Any) -> None:
    # Both bindings answer an unknown name with a bare EINVAL; resolving it first
    # lets the message say which entry of the profile is wrong.
    if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:
        raise SeccompUnavailable(
            f"cannot compile the seccomp allowlist: seccomp.{section}: unknown syscall {name!r} on this architecture"
        )
    try:
        ruleset.add_rule(action, name, *args)
    except (RuntimeError, OSError, ValueError) as exc:
        raise SeccompUnavailable(
            f"cannot compile the seccomp allowlist: seccomp.{section}: libseccomp refused the rule for {name!r}: {exc}"
        ) from None
