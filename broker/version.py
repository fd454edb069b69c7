"""The installed distribution's version, for `bastion --version`, serverInfo and the audit log.

Its own module, standard library only, so `bastion --version` loads nothing else.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("bastion-soc-mcp")  # the distribution name (pyproject.toml)
    except PackageNotFoundError:
        return "0+unknown"
