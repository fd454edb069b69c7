"""Both libseccomp bindings Bastion accepts compile the same BPF for every shipped
profile, and each failure of either one becomes one clear, fail-closed reason."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import pytest

from broker.sandbox import seccomp_compile
from broker.sandbox.profile import Seccomp, load_profile, profile_names
from broker.sandbox.seccomp_compile import SeccompUnavailable, compile_filter
from tests.conftest import ROOT

PROFILES = profile_names()
BPF_INSTRUCTION = 8  # sizeof(struct sock_filter)


def _official() -> ModuleType:
    module = seccomp_compile.os_binding()
    if module is None:
        pytest.skip("libseccomp's official binding (python3-seccomp) is not installed here")
    return module


def _pypi() -> ModuleType:
    module = seccomp_compile.pypi_binding()
    assert module is not None, "pyseccomp is a declared dependency: it must import"
    return module


def test_every_shipped_profile_is_checked() -> None:
    assert {"grep", "intel", "resource"} <= set(PROFILES)


@pytest.mark.parametrize("kind", PROFILES)
def test_both_bindings_compile_the_same_program(kind: str) -> None:
    rules = load_profile(kind).seccomp
    official, pypi = compile_filter(rules, _official()), compile_filter(rules, _pypi())
    assert len(official) % BPF_INSTRUCTION == 0 and len(official) > 10 * BPF_INSTRUCTION
    assert official == pypi


def test_the_official_binding_is_preferred_and_pyseccomp_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    if seccomp_compile.os_binding() is not None:
        assert seccomp_compile.binding_name(seccomp_compile.binding()) == "python3-seccomp"
    monkeypatch.setattr(seccomp_compile, "os_binding", lambda: None)
    assert seccomp_compile.binding().__name__ == "pyseccomp"


def test_no_binding_at_all_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seccomp_compile, "os_binding", lambda: None)
    monkeypatch.setattr(seccomp_compile, "pypi_binding", lambda: None)
    with pytest.raises(SeccompUnavailable, match="no libseccomp Python binding"):
        compile_filter(load_profile("grep").seccomp)


@pytest.mark.parametrize("which", ["official", "pypi"])
@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (Seccomp(allow=["read", "no_such_syscall"]), r"seccomp\.allow: unknown syscall 'no_such_syscall'"),
        (Seccomp(allow=["read"], errno={"not_a_call": "ENOSYS"}), r"seccomp\.errno: unknown syscall 'not_a_call'"),
    ],
)
def test_an_unknown_syscall_names_the_entry_with_either_binding(which: str, rules: Seccomp, message: str) -> None:
    module = _official() if which == "official" else _pypi()
    with pytest.raises(SeccompUnavailable, match=message):
        compile_filter(rules, module)


def test_pyseccomp_without_libseccomp_means_no_binding_not_a_crash() -> None:
    # pyseccomp raises RuntimeError at import when ctypes finds no libseccomp;
    # an interpreter whose library search finds nothing shows the fallback stays closed.
    code = (
        "import ctypes.util, sys\n"
        "real = ctypes.util.find_library\n"
        "ctypes.util.find_library = lambda name: None if name == 'seccomp' else real(name)\n"
        "sys.modules['seccomp'] = None\n"  # hides an importable official binding
        "from broker.sandbox import seccomp_compile as s\n"
        "s.DEBIAN_DIST_PACKAGES = s.Path('/nonexistent')\n"
        "assert s.pypi_binding() is None and s.os_binding() is None\n"
        "try:\n    s.binding()\nexcept s.SeccompUnavailable as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no libseccomp Python binding could be loaded")
