"""completion/complete: values a host may offer for prompt and resource-template arguments.

log_path (of triage_auth_failures and of the log resource template) completes by prefix
from the files the allowlist covers now; incident_id completes to the accepted form of what
was typed. Nothing else is offered, and no log content is read.
"""

from __future__ import annotations

import re

import mcp_types as types

from broker.errors import UnknownName
from broker.files.allowlist import Allowlist
from broker.tools import prompts
from broker.tools.resources import LOG_TEMPLATE

MAX_VALUES = 50  # per answer (the protocol allows 100); total and has_more say what was left out
MAX_VALUE_CHARS = 4096  # longer than any path the allowlist accepts: nothing can complete it
NOT_ID = re.compile(r"[^A-Za-z0-9._:-]+")
UNKNOWN_TEMPLATE = "unknown resource template"
EMPTY = types.Completion(values=[], total=0, has_more=False)


def complete(
    ref: types.PromptReference | types.ResourceTemplateReference, argument: str, value: str, allowlist: Allowlist
) -> types.Completion:
    """The completion for one argument; UnknownName for a prompt or template that does not exist."""
    if isinstance(ref, types.PromptReference):
        if ref.name not in {spec.name for spec in prompts.PROMPTS}:
            raise prompts.unknown(ref.name)
        if (ref.name, argument) == ("triage_auth_failures", "log_path"):
            return _bounded(log_paths(allowlist, value))
        if (ref.name, argument) == ("analyze_incident", "incident_id"):
            return _bounded(incident_ids(value))
        return EMPTY
    if ref.uri != LOG_TEMPLATE:
        raise UnknownName(UNKNOWN_TEMPLATE)
    return _bounded(log_paths(allowlist, value)) if argument == "log_path" else EMPTY


def log_paths(allowlist: Allowlist, prefix: str) -> list[str]:
    """Every file the allowlist covers now whose path starts with `prefix`, sorted: a
    single file each (a glob itself opens nothing). Entries whose directory cannot lead
    to the prefix are not even listed."""
    if len(prefix) > MAX_VALUE_CHARS:
        return []
    found: set[str] = set()
    for pinned in allowlist.pinned:
        directory = pinned.shown.rstrip("/") + "/"
        if prefix.startswith(directory) or directory.startswith(prefix):
            found.update(path for path in allowlist.covered(pinned) if path.startswith(prefix))
    return sorted(found)


def incident_ids(value: str) -> list[str]:
    """The typed id if prompts accept it, else its accepted form (runs of other characters
    become '-', cut to 64); nothing when no letter or digit is left."""
    if prompts.INCIDENT_ID.fullmatch(value):
        return [value]
    fixed = NOT_ID.sub("-", value[:MAX_VALUE_CHARS]).strip("._:-")[:64]
    return [fixed] if prompts.INCIDENT_ID.fullmatch(fixed) else []


def _bounded(values: list[str]) -> types.Completion:
    return types.Completion(values=values[:MAX_VALUES], total=len(values), has_more=len(values) > MAX_VALUES)
