"""The `bastion` command line: the parser and dispatch, one module per subcommand.

serve.py `serve`, token_new.py `token new`, audit.py `audit verify`, doctor.py
`doctor`, sandbox_run.py `sandbox run`, intel.py `intel compile`; exit_codes.py
holds the exit codes they share, options.py the options several of them take.
(Not token.py: run as a script, this directory is on sys.path, and a token.py
would shadow the standard library's.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from broker.cli import audit, doctor, intel, sandbox_run, serve, token_new
from broker.version import package_version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bastion", description="Hardened MCP server for security operations.")
    parser.add_argument("--version", action="version", version=f"bastion {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (serve, token_new, audit, doctor, sandbox_run, intel):  # the order of `bastion --help`
        command.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="bastion: %(levelname)s %(message)s",
    )
    command: Callable[[argparse.Namespace], int] = args.func  # set by each subcommand's parser
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
