"""The policy file: one TOML document decoded into msgspec Structs.

Unknown keys and bad values are errors that name the key, so a typo never
silently weakens a limit. Relative paths are resolved against the directory
of the policy file, which keeps the bundled example self-contained.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from broker import state_dir as state_dir_module
from broker.files.regular_file import read_regular
from broker.sandbox.profile import LayerName

GLOB_CHARS = re.compile(r"[*?\[]")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MAX_POLICY_BYTES = 1 << 20  # a policy is a few KiB; a huge one is a mistake or an attack
MAX_RESTRICTION_VALUES = 64  # units or identifiers of one [[journals]] entry (a worker takes 256)


class PolicyError(Exception):
    """The policy file cannot be used; the message names the offending key."""


# Names an operator gives clients, scopes and logs: what audit records and scope tables show.
Name = Annotated[str, Meta(pattern=f"^{NAME_PATTERN.pattern}$")]


class LogEntry(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    name: Name | None = None  # unique; what a [scopes.NAME] table may grant it by
    description: str = ""
    # Also search path.1, path.2.gz ... (logrotate's names) as one log, oldest first.
    rotations: bool = False
    # A symlink on the path is refused at load unless this is set; then it is
    # followed once, at load, and its target pinned (never re-resolved).
    follow_symlinks: bool = False

    @property
    def is_glob(self) -> bool:
        return bool(GLOB_CHARS.search(self.path))


JOURNAL_SUFFIXES = (".journal", ".journal~")  # journald's active and its dirty-archived files
# A unit, syslog identifier or host name as journald stores it: no control characters, no '='.
FieldValue = Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f=]{1,256}$")]


class JournalSource(msgspec.Struct, forbid_unknown_fields=True):
    """A [[journals]] entry: journal files the query_journal tool may read as one journal."""

    name: Name  # what query_journal's `source` takes; unique
    # A directory (its journal files and those one directory below: the machine-id
    # directory, remote/) or one file ending in .journal or .journal~.
    path: str
    description: str = ""
    # Restrictions, applied by the journal library in the worker: only entries of these
    # units / syslog identifiers are ever read (an entry must pass each one given).
    units: list[FieldValue] | None = None
    identifiers: list[FieldValue] | None = None
    follow_symlinks: bool = False  # as for [[logs]]

    @property
    def is_file(self) -> bool:
        return self.path.endswith(JOURNAL_SUFFIXES)


class Limits(msgspec.Struct, forbid_unknown_fields=True):
    max_lines: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 10
    # Bytes a worker may send back per call. It also bounds the broker's memory:
    # the SDK needs ~14x the result's text to build and send one reply.
    max_output_bytes: Annotated[int, Meta(ge=1024, le=1 << 30)] = 1 << 20
    max_workers: Annotated[int, Meta(ge=1, le=256)] = 4
    max_line_bytes: Annotated[int, Meta(ge=64, le=1 << 20)] = 4096
    resource_bytes: Annotated[int, Meta(ge=1024, le=64 << 20)] = 1 << 20
    # Files one search of a glob or of rotations covers (the most recently modified;
    # beyond: reported as left out). A central collector's remote/*/auth.log has one
    # per host; a search runs them 32 to a worker, ~4 ms a file, within timeout_s.
    max_glob_files: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    max_context: Annotated[int, Meta(ge=0, le=100)] = 10  # query_logs' context lines, each side
    max_decompressed_bytes: Annotated[int, Meta(ge=1 << 20, le=1 << 40)] = 1 << 30  # per call, over all .gz files
    # Calls that may wait for a worker slot once max_workers are busy; beyond: "busy".
    max_queue: Annotated[int, Meta(ge=0, le=10_000)] = 32


class Audit(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    # Rotate when the file would pass this size (0: never; leave it to logrotate).
    max_bytes: Annotated[int, Meta(ge=0, le=1 << 40)] = 0
    # Rotated files kept (path.1 newest ... path.keep oldest); older ones are deleted.
    keep: Annotated[int, Meta(ge=1, le=1000)] = 10
    # Signed checkpoints (broker/audit/checkpoint.py): the Ed25519 private key from
    # `bastion audit keygen` ("" = none), and how often one is written.
    checkpoint_key: str = ""
    checkpoint_every: Annotated[int, Meta(ge=1, le=1_000_000)] = 100  # records
    checkpoint_interval_s: Annotated[float, Meta(ge=1, le=86_400)] = 60.0


# What a [scopes.NAME] table may grant (tests/test_scopes.py checks them against
# broker/tools/registry.py and broker/tools/prompts.py, which import this module).
TOOL_NAMES = ("list_logs", "query_logs", "query_journal", "check_ip_reputation")
PROMPT_NAMES = ("analyze_incident", "triage_auth_failures")
# What a [rate_limit.tools.NAME] table may name: the tools, resources/read, prompts/get and completions.
RATE_LIMITED = (
    *TOOL_NAMES,
    "resources/read",
    "prompts/get",
    "completion/complete",
)


class Rate(msgspec.Struct, forbid_unknown_fields=True):
    calls: Annotated[int, Meta(ge=1, le=1_000_000)]
    window_s: Annotated[float, Meta(gt=0, le=86_400)]


class RateLimit(msgspec.Struct, forbid_unknown_fields=True):
    # Token buckets: `calls` per `window_s` for each (client, tool), refilled
    # continuously, and one global bucket shared by every client and tool.
    calls: Annotated[int, Meta(ge=1, le=1_000_000)] = 60
    window_s: Annotated[float, Meta(gt=0, le=86_400)] = 60
    global_calls: Annotated[int, Meta(ge=1, le=10_000_000)] = 600
    global_window_s: Annotated[float, Meta(gt=0, le=86_400)] = 60
    tools: dict[str, Rate] = msgspec.field(default_factory=dict)


class Workers(msgspec.Struct, forbid_unknown_fields=True):
    # Idle, already-confined workers kept ready per kind, so sandbox start-up
    # is paid between calls rather than during one. Each still serves one call.
    # Two keep back-to-back calls from waiting for a refill most of the time.
    prestart: Annotated[int, Meta(ge=0, le=16)] = 2


class Search(msgspec.Struct, forbid_unknown_fields=True):
    # query_logs' engine: "auto" = ripgrep when installed, for searches without
    # context lines over >= 8 MiB (it starts slower, scans faster), else GNU grep;
    # "grep" never uses ripgrep; "rg" requires it and uses it whenever it can.
    engine: Literal["auto", "grep", "rg"] = "auto"


class Sandbox(msgspec.Struct, forbid_unknown_fields=True):
    # "auto": a bastion-worker account if the host has one, else 65534 (nobody).
    worker_user: str = "auto"
    # Layers every profile may skip when this host cannot apply them. Each
    # downgrade is logged at start and recorded in the audit log.
    best_effort: list[LayerName] = msgspec.field(default_factory=list)
    # Like OpenSSH's StrictModes: refuse to start (instead of warning) when an
    # allowlisted log, its directory or one above is writable by anyone but root.
    strict_modes: bool = False


FeedName = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class IntelFeed(msgspec.Struct, forbid_unknown_fields=True):
    name: FeedName
    path: str
    format: Literal["netset", "csv", "tor_exits"]
    category: Annotated[str, Meta(min_length=1, max_length=64)]
    confidence: Annotated[int, Meta(ge=0, le=100)]
    column: Annotated[int, Meta(ge=1, le=1000)] = 1  # csv: 1-based column of the address
    header: bool = True  # csv: the first row names the columns
    delimiter: Annotated[str, Meta(min_length=1, max_length=1)] = ","


class Intel(msgspec.Struct, forbid_unknown_fields=True):
    database: str  # written by `bastion intel compile`, read by the server
    feeds: list[IntelFeed] = msgspec.field(default_factory=list)
    # A feed whose file is older than this is reported with a warning.
    max_age_hours: Annotated[float, Meta(gt=0, le=24 * 3650)] = 48
    # A listing at or above this confidence makes the verdict "malicious", below it "suspicious".
    malicious_confidence: Annotated[int, Meta(ge=0, le=100)] = 75
    refuse: list[str] = msgspec.field(default_factory=list)  # extra ranges never looked up (CIDR)
    asn_mmdb: str = ""  # optional MaxMind-format ASN database
    country_mmdb: str = ""  # optional MaxMind-format country database
    history_days: Annotated[int, Meta(ge=1, le=3650)] = 365  # delisted entries kept this long


class ScopeRule(msgspec.Struct, forbid_unknown_fields=True):
    """A [scopes.NAME] table: what the clients given this scope may use (broker/scopes.py).
    An omitted list grants everything of its kind; an empty one nothing."""

    logs: list[str] | None = None  # [[logs]] entries by name, or by path as written there
    journals: list[str] | None = None  # [[journals]] entries by name
    tools: list[str] | None = None
    prompts: list[str] | None = None
    max_lines: Annotated[int, Meta(ge=1, le=100_000)] | None = None  # at most limits.max_lines
    rate: Rate | None = None  # one more bucket per client, over all its calls: only ever tighter


class HttpClient(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    token_sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]  # from `bastion token new NAME`
    revoked: bool = False  # kept so the name stays on record; its token is refused
    scope: str = ""  # a [scopes.NAME] table; "" = everything


class Http(msgspec.Struct, forbid_unknown_fields=True):
    clients: list[HttpClient] = msgspec.field(default_factory=list)
    # Binding anything but loopback or a unix socket must be asked for explicitly.
    allow_non_loopback: bool = False
    allowed_hosts: list[str] = msgspec.field(default_factory=list)  # extra Host header values (host:port)
    allowed_origins: list[str] = msgspec.field(default_factory=list)  # extra Origin values (scheme://host:port)
    max_sessions: Annotated[int, Meta(ge=1, le=1000)] = 32
    # Sessions one client (token) may hold; opening one more closes its least recently used.
    # Above max_sessions it is max_sessions in effect (the global cap evicts the same way).
    max_sessions_per_client: Annotated[int, Meta(ge=1, le=1000)] = 8
    # A session with no request for this long is closed (Inspector and SDK hosts never DELETE).
    session_idle_timeout_s: Annotated[float, Meta(ge=1, le=86_400)] = 300


class Stdio(msgspec.Struct, forbid_unknown_fields=True):
    scope: str = ""  # the scope of the stdio user; "" = everything


class Policy(msgspec.Struct, forbid_unknown_fields=True):
    audit: Audit
    logs: list[LogEntry] = msgspec.field(default_factory=list)
    journals: list[JournalSource] = msgspec.field(default_factory=list)
    limits: Limits = msgspec.field(default_factory=Limits)
    workers: Workers = msgspec.field(default_factory=Workers)
    search: Search = msgspec.field(default_factory=Search)
    sandbox: Sandbox = msgspec.field(default_factory=Sandbox)
    rate_limit: RateLimit = msgspec.field(default_factory=RateLimit)
    intel: Intel | None = None
    http: Http = msgspec.field(default_factory=Http)
    scopes: dict[str, ScopeRule] = msgspec.field(default_factory=dict)
    stdio: Stdio = msgspec.field(default_factory=Stdio)
    # Set by load_policy, not read from the file.
    source: str = ""
    sha256: str = ""
    # The state directory, when a path uses ${state}/: the only directory Bastion
    # creates when missing (broker/files/output_dir.py).
    state_root: str = ""


def _friendly(exc: msgspec.MsgspecError) -> str:
    # msgspec says "... - at `$.limits.max_lines`"; show the TOML key instead.
    text = str(exc)
    match = re.search(r" - at `\$(.*)`$", text)
    if not match:
        return text
    key = match.group(1).lstrip(".") or "(top level)"
    return f"{key}: {text[: match.start()]}"


def _scope_named(data: bytes) -> str | None:
    """The error of the first invalid [scopes.NAME] table, named (msgspec says only
    `scopes[...]`); None when every one is valid (the error is elsewhere)."""
    tables = msgspec.toml.decode(data).get("scopes")
    for name, table in tables.items() if isinstance(tables, dict) else ():
        try:
            msgspec.convert(table, ScopeRule)
        except msgspec.ValidationError as exc:
            return f"scopes.{name}." + _friendly(exc) if " - at `$." in str(exc) else f"scopes.{name}: {exc}"
    return None


def _resolve(base: Path, value: str, key: str) -> str:
    if not value or "\x00" in value:
        raise PolicyError(f"{key}: must be a non-empty path")
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    return os.path.normpath(str(path))


def _check_logs(policy: Policy, base: Path) -> None:
    if not policy.logs and not policy.journals:
        raise PolicyError("logs: at least one [[logs]] or [[journals]] entry is required")
    for index, entry in enumerate(policy.logs):
        key = f"logs[{index}].path"
        if entry.path.endswith("/"):  # checked before normpath, which drops the slash
            raise PolicyError(f"{key}: must name files, not a directory")
        entry.path = _resolve(base, entry.path, key)
        if "**" in entry.path:
            raise PolicyError(f"{key}: '**' is not supported; list each directory level")
        if entry.rotations and entry.is_glob:
            raise PolicyError(f"logs[{index}].rotations: only for a single file, not a glob")
    names = [entry.name for entry in policy.logs if entry.name is not None]
    if len(set(names)) != len(names):
        raise PolicyError("logs: entry names must be unique")


def _check_journals(policy: Policy, base: Path) -> None:
    for index, source in enumerate(policy.journals):
        key = f"journals[{index}]"
        source.path = _resolve(base, source.path, f"{key}.path")
        if GLOB_CHARS.search(source.path):
            raise PolicyError(f"{key}.path: a directory or one journal file, not a glob")
        for field, values in (("units", source.units), ("identifiers", source.identifiers)):
            if values is not None and not values:
                raise PolicyError(f"{key}.{field}: an empty list would allow nothing; leave it out to allow all")
            if values is not None and len(values) > MAX_RESTRICTION_VALUES:
                raise PolicyError(f"{key}.{field}: at most {MAX_RESTRICTION_VALUES} values")
    names = [source.name for source in policy.journals]
    if len(set(names)) != len(names):
        raise PolicyError("journals: entry names must be unique")


def _state_path(base: Path, value: str, key: str, state_dir: str | None) -> str:
    """A path Bastion writes: it may start with ${state}/ (broker/state_dir.py)."""
    try:
        return _resolve(base, state_dir_module.expand(value, state_dir), key)
    except state_dir_module.StateDirError as exc:
        raise PolicyError(f"{key}: {exc}") from None


def _state_root(written: list[str], state_dir: str | None) -> str:
    """The state directory if one of the paths Bastion writes starts with ${state}."""
    if not any(path.startswith(state_dir_module.TOKEN) for path in written):
        return ""
    return str(state_dir_module.state_directory(state_dir))  # cannot fail: the paths expanded


def _check_intel(intel: Intel, base: Path, state_dir: str | None) -> None:
    from broker.tools.check_ip_reputation.address import parse_networks

    intel.database = _state_path(base, intel.database, "intel.database", state_dir)
    for key in ("asn_mmdb", "country_mmdb"):
        if getattr(intel, key):
            setattr(intel, key, _resolve(base, getattr(intel, key), f"intel.{key}"))
    names = [feed.name for feed in intel.feeds]
    if len(set(names)) != len(names):
        raise PolicyError("intel.feeds: feed names must be unique")
    for index, feed in enumerate(intel.feeds):
        feed.path = _resolve(base, feed.path, f"intel.feeds[{index}].path")
    try:
        parse_networks(intel.refuse, "intel.refuse")
    except ValueError as exc:
        raise PolicyError(str(exc)) from None


def _check_http(http: Http) -> None:
    names = [client.name for client in http.clients]
    if len(set(names)) != len(names):
        raise PolicyError("http.clients: client names must be unique")


def _scope_logs(policy: Policy, base: Path, values: list[str], key: str) -> list[str]:
    """The paths of the entries a scope grants: each value an entry's name, else its path
    (resolved as [[logs]] paths are). Duplicates are kept once."""
    by_name = {entry.name: entry.path for entry in policy.logs if entry.name is not None}
    paths = {entry.path for entry in policy.logs}
    granted: list[str] = []
    for index, value in enumerate(values):
        path = by_name.get(value) or _resolve(base, value, f"{key}[{index}]")
        if path not in paths:
            raise PolicyError(f"{key}[{index}]: {value!r} is neither the name nor the path of a [[logs]] entry")
        granted.append(path)
    return list(dict.fromkeys(granted))


def _check_names(values: list[str] | None, known: tuple[str, ...], key: str) -> None:
    for index, value in enumerate(values or []):
        if value not in known:
            raise PolicyError(f"{key}[{index}]: unknown {value!r}; one of {', '.join(known)}")


def _check_scopes(policy: Policy, base: Path) -> None:
    for name, rule in policy.scopes.items():
        key = f"scopes.{name}"
        if not NAME_PATTERN.fullmatch(name):
            raise PolicyError(f"{key}: a scope name is 1-64 letters, digits and _ . @ - (a letter or digit first)")
        if rule.logs is not None:
            rule.logs = _scope_logs(policy, base, rule.logs, f"{key}.logs")
        _check_names(rule.journals, tuple(source.name for source in policy.journals), f"{key}.journals")
        _check_names(rule.tools, TOOL_NAMES, f"{key}.tools")
        _check_names(rule.prompts, PROMPT_NAMES, f"{key}.prompts")
        if rule.max_lines is not None and rule.max_lines > policy.limits.max_lines:
            raise PolicyError(f"{key}.max_lines: must be at most limits.max_lines ({policy.limits.max_lines})")
    users = [(f"http.clients[{i}].scope", client.scope) for i, client in enumerate(policy.http.clients)]
    for key, scope in [*users, ("stdio.scope", policy.stdio.scope)]:
        if scope and scope not in policy.scopes:
            raise PolicyError(f"{key}: no [scopes.{scope[:64]}] table defines this scope")


def parse_policy(data: bytes, base: Path, source: str = "<policy>", state_dir: str | None = None) -> Policy:
    try:
        policy = msgspec.toml.decode(data, type=Policy)
    except msgspec.ValidationError as exc:
        raise PolicyError(_scope_named(data) or _friendly(exc)) from None
    except msgspec.DecodeError as exc:
        raise PolicyError(f"not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not valid UTF-8 at byte {exc.start}") from None
    if policy.source or policy.sha256 or policy.state_root:
        raise PolicyError("source/sha256/state_root: reserved keys, not settable in the file")
    _check_logs(policy, base)
    _check_journals(policy, base)
    for name in policy.rate_limit.tools:
        if name not in RATE_LIMITED:
            raise PolicyError(f"rate_limit.tools.{name}: unknown tool; one of {', '.join(RATE_LIMITED)}")
    written = [policy.audit.path, policy.audit.checkpoint_key, policy.intel.database if policy.intel else ""]
    policy.audit.path = _state_path(base, policy.audit.path, "audit.path", state_dir)
    if policy.audit.checkpoint_key:
        policy.audit.checkpoint_key = _state_path(base, policy.audit.checkpoint_key, "audit.checkpoint_key", state_dir)
    if policy.intel is not None:
        _check_intel(policy.intel, base, state_dir)
    _check_http(policy.http)
    _check_scopes(policy, base)
    policy.state_root = _state_root(written, state_dir)
    policy.source = source
    policy.sha256 = hashlib.sha256(data).hexdigest()
    return policy


def load_policy(path: str | os.PathLike[str], state_dir: str | None = None) -> Policy:
    """Parse the policy file. It may be a symlink (config management makes them; who can
    replace the link can replace the file), but it must end at a regular file: a FIFO
    planted there would stall the open (broker/files/regular_file.py)."""
    file = Path(path)
    try:
        data = read_regular(str(file), MAX_POLICY_BYTES)
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {file}: {exc.strerror}") from None
    return parse_policy(data, file.resolve().parent, str(file), state_dir)
