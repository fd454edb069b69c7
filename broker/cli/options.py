"""Options that several subcommands take, written once so their help texts agree."""

from __future__ import annotations

import argparse

PROFILES_DIR_HELP = "sandbox profiles from DIR instead of the shipped ones"


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    """--state-dir, for a command that loads a policy (serve, doctor, intel compile)."""
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="directory for what a policy writes under ${state}/ "
        "(default $XDG_STATE_HOME/bastion or ~/.local/state/bastion)",
    )
