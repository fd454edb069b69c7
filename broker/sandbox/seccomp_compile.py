"""Broker side of the seccomp layer: compile a profile's allowlist with libseccomp.

libseccomp resolves syscall names for this architecture, generates the
architecture check (any non-native ABI, including x32, takes the kill
action) and emits the BPF program; nothing here assembles BPF by hand. The
binding is the official one shipped by Debian as python3-seccomp; when the
running interpreter cannot import it directly (a virtualenv on a different
CPython build), the same extension module is loaded from Debian's path
provided its ABI tag matches this interpreter.
"""

from __future__ import annotations

import errno
import importlib.machinery
import importlib.util
import tempfile
from pathlib import Path
from types import ModuleType

from broker.sandbox.profile import Seccomp

DEBIAN_DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")


class SeccompUnavailable(Exception):
    """libseccomp or its binding is missing, or the profile names an unknown syscall."""


def binding() -> ModuleType:
    try:
        import seccomp  # type: ignore[import-not-found]

        return seccomp
    except ImportError:
        pass
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = DEBIAN_DIST_PACKAGES / f"seccomp{suffix}"
        if candidate.is_file() and suffix != ".so":
            spec = importlib.util.spec_from_file_location("seccomp", candidate)
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module
    raise SeccompUnavailable("the libseccomp Python binding is not installed (Debian: apt-get install python3-seccomp)")


def compile_filter(rules: Seccomp) -> bytes:
    """BPF bytes (struct sock_filter[]) for the profile's rules."""
    sc = binding()
    try:
        ruleset = sc.SyscallFilter(defaction=sc.KILL_PROCESS)
        ruleset.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
        for name in rules.allow:
            ruleset.add_rule(sc.ALLOW, name)
        for name, code in rules.errno.items():
            ruleset.add_rule(sc.ERRNO(getattr(errno, code)), name)
        for condition in rules.conditional:
            if condition.mask is not None:
                ruleset.add_rule(sc.ALLOW, condition.syscall, sc.Arg(condition.arg, sc.MASKED_EQ, condition.mask, condition.equals))
            for value in condition.values:
                ruleset.add_rule(sc.ALLOW, condition.syscall, sc.Arg(condition.arg, sc.EQ, value))
    except (RuntimeError, ValueError, AttributeError) as exc:
        raise SeccompUnavailable(f"cannot compile the seccomp allowlist: {exc}") from None
    with tempfile.TemporaryFile() as file:
        ruleset.export_bpf(file)
        file.seek(0)
        return file.read()
