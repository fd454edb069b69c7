"""The trust zones hold: a confined worker loads no broker code and no SDK, and the
broker never imports code that runs in a worker.

    workers/        runs in the worker process, its confinement included: imports bastion_wire, never broker
    broker/         runs in the broker: imports bastion_wire, never workers
    bastion_wire/   what both share (protocol, plan, intel database format): stdlib and msgspec only

The dynamic check starts the interpreter exactly as the broker starts the launcher, which
every worker is cloned from (broker.pool.worker_process.python_argv: `python -I -S -c BOOT`,
empty environment, the same sys.path) and runs the boot string's imports, stopping before
its run() call: what it has loaded then is what every worker starts with.
The static check reads every module of each package, so an import inside a function,
which no boot would show, is caught too.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from broker.pool import launcher
from broker.pool import worker_process as dispatch
from tests.conftest import ROOT

RUN_CALL = "; run(sys.argv[1:3])"
# Nothing of the broker, the MCP SDK or its transports belongs in a worker. Nor does
# subprocess: a worker starts its engine with os.posix_spawn or os.fork + execve
# (workers/engine_process.py), never through subprocess, whose import would also
# bring threading, selectors and signal handling machinery into every worker.
NEVER_IN_A_WORKER = ("broker", "mcp", "mcp_types", "anyio", "uvicorn", "starlette", "subprocess")
# The launcher pre-imports workers.intel for every worker it forks: maxminddb's __init__
# calls importlib.metadata.version(), which imports zipfile (-> threading) and
# importlib.resources (-> tempfile); none of them is used once confined.
SHARED_MAY_IMPORT = {"msgspec", "bastion_wire"}


def _matches(module: str, names: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


def modules_after_boot(boot: str) -> set[str]:
    """sys.modules after running BOOT's imports as the launcher would."""
    assert boot.endswith(RUN_CALL), f"the boot string changed shape; update this test: {boot!r}"
    code = boot[: -len(RUN_CALL)] + "; print('\\n'.join(sorted(sys.modules)))"
    # channel fd 0 is never used: the boot stops before run() reads it.
    proc = subprocess.run(dispatch.python_argv(code, 0), env={}, cwd="/", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_a_worker_loads_no_broker_code_and_no_sdk() -> None:
    loaded = modules_after_boot(launcher.BOOT)
    assert {"workers.confine.order", "workers.main", "workers.intel"} <= loaded, "the boot did not import the worker"
    assert sorted(name for name in loaded if _matches(name, NEVER_IN_A_WORKER)) == []


def imported_modules(source: str) -> set[str]:
    """Every absolute module an import statement anywhere in `source` names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _imports_of(package: str) -> dict[str, set[str]]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules under {package}/"
    return {str(path.relative_to(ROOT)): imported_modules(path.read_text()) for path in files}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("workers", ("broker",)),
        ("broker", ("workers",)),
        ("bastion_wire", ("broker", "workers")),
    ],
)
def test_no_package_imports_across_the_boundary(package: str, forbidden: tuple[str, ...]) -> None:
    crossing = {
        path: sorted(m for m in modules if _matches(m, forbidden)) for path, modules in _imports_of(package).items()
    }
    assert {path: modules for path, modules in crossing.items() if modules} == {}


def test_the_shared_package_needs_only_the_stdlib_and_msgspec() -> None:
    for path, modules in _imports_of("bastion_wire").items():
        tops = {module.split(".")[0] for module in modules}
        assert sorted(tops - set(sys.stdlib_module_names) - SHARED_MAY_IMPORT - {"__future__"}) == [], path


@pytest.mark.parametrize(
    "source",
    [
        "from broker.sandbox.profile import Rlimits",
        "import broker.pool.worker_process",
        "from broker import audit",
        "def later():\n    import broker.policy\n",
    ],
)
def test_the_static_check_sees_every_form_of_import(source: str) -> None:
    assert any(_matches(module, ("broker",)) for module in imported_modules(source))


def test_the_static_check_ignores_relative_and_other_imports() -> None:
    assert not any(_matches(m, ("broker",)) for m in imported_modules("from . import brokers\nimport brokerage\n"))
