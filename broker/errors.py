"""Errors that are safe to show to the client.

Only ToolError messages ever reach the client. They are written for the
client (short, no internal paths, no stack traces); every other exception is
reported as a generic internal error and its details go to the audit log.
"""

from __future__ import annotations

from typing import Literal

# The audit end record's outcome: exactly the values README.md's audit table lists.
Outcome = Literal[
    "ok",
    "invalid",
    "denied_rate",
    "busy",
    "timeout",
    "output_capped",
    "limit_exceeded",
    "worker_crashed",
    "sandbox_violation",
    "cancelled",
    "internal_error",
]


class ToolError(Exception):
    """A call failed for a reason the client may see.

    `outcome` is the audit classification (invalid, timeout, busy, ...).
    """

    def __init__(self, message: str, outcome: Outcome = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome


class UnknownName(Exception):
    """The client named a tool, resource or prompt that does not exist (a protocol error)."""
