"""`bastion token new NAME`: a fresh bearer token for an HTTP client, shown once."""

from __future__ import annotations

import argparse
import re
import sys

from broker.cli import exit_codes
from broker.transport.http_tokens import new_token, paste_lines


def cmd_token_new(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", args.name):
        print(
            "bastion token new: NAME must be 1-64 letters, digits and _ . @ - (starting with a letter or digit)",
            file=sys.stderr,
        )
        return exit_codes.CONFIG
    token = new_token()
    print(f"token for {args.name} (shown once; give it to that client only):\n\n    {token}\n")
    print("add to the policy, then restart bastion:\n")
    print(paste_lines(args.name, token))
    return exit_codes.OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser("token", help="HTTP client tokens").add_subparsers(dest="token_command", required=True)
    token_new = token.add_parser(
        "new", help="print a fresh bearer token once, and the [[http.clients]] lines for the policy"
    )
    token_new.add_argument("name", help="the client's name, as it will appear in audit records")
    token_new.set_defaults(func=cmd_token_new)
