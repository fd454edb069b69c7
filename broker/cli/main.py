"""The `bastion` command line: the parser and dispatch, one module per subcommand.

serve.py `serve`, token_new.py `token new`, audit.py `audit verify`, doctor.py
`doctor`, sandbox_run.py `sandbox run`, intel.py `intel compile`; exit_codes.py
holds the exit codes they share, options.py the options several of them take.
(Not token.py: run as a script, this directory is on sys.path, and a token.py
would shadow the standard library's.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from broker.cli import audit, doctor, intel, sandbox_run, serve, stderr_log, token_new
from broker.version import package_version

VERBOSE_HELP = "log debug details to stderr"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bastion", description="Hardened MCP server for security operations.")
    parser.add_argument("--version", action="version", version=f"bastion {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (serve, token_new, audit, doctor, sandbox_run, intel):  # the order of `bastion --help`
        command.add_commands(commands)
    _verbose_after(commands)
    return parser


def _verbose_after(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`bastion serve -v` as well as `bastion -v serve`. SUPPRESS as the default keeps a
    subcommand that was given no -v from resetting the one given before it."""
    for sub in commands.choices.values():
        nested = [action for action in sub._actions if isinstance(action, argparse._SubParsersAction)]
        if nested:
            _verbose_after(nested[0])
        else:
            sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stderr_log.configure(args.verbose)
    command: Callable[[argparse.Namespace], int] = args.func  # set by each subcommand's parser
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
