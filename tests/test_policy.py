"""The policy file: decoding, path resolution and errors that name the offending key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from broker.policy import Http, Limits, PolicyError, Workers, load_policy, parse_policy
from tests.conftest import EXAMPLES

MINIMAL = '[[logs]]\npath = "/var/log/auth.log"\n\n[audit]\npath = "/var/log/bastion/audit.jsonl"\n'


def policy_with(
    extra: str = "", logs: str = '[[logs]]\npath = "/var/log/auth.log"\n', audit: str | None = None
) -> bytes:
    audit_block = '[audit]\npath = "/var/log/bastion/audit.jsonl"\n' if audit is None else audit
    return f"{extra}\n{logs}\n{audit_block}".encode()


def test_bundled_example_policy(tmp_path: Path) -> None:
    policy_file = EXAMPLES / "policy.toml"
    policy = load_policy(policy_file, state_dir=str(tmp_path))
    base = policy_file.resolve().parent
    assert [entry.path for entry in policy.logs] == [
        str(base / "logs" / "auth.log"),
        str(base / "logs" / "syslog"),
        str(base / "logs" / "access.log"),
    ]
    assert all(entry.description for entry in policy.logs)
    assert not any(entry.is_glob for entry in policy.logs)
    assert [(source.name, source.path) for source in policy.journals] == [("fleet", str(base / "journal"))]
    assert "synthetic sample data" in policy.journals[0].description  # examples/generate_journal.py writes it
    assert policy.audit.path == str(tmp_path / "audit.jsonl")  # what it writes goes to the state dir
    assert policy.intel is not None and policy.intel.database == str(tmp_path / "intel.db")
    assert policy.sha256 == hashlib.sha256(policy_file.read_bytes()).hexdigest()
    assert policy.source == str(policy_file)
    assert policy.limits == Limits(
        max_lines=1000,
        timeout_s=10,
        max_output_bytes=1048576,
        max_workers=4,
        max_line_bytes=4096,
        resource_bytes=1048576,
    )
    assert policy.workers == Workers(prestart=2)
    assert (policy.http.max_sessions, policy.http.max_sessions_per_client) == (32, 8)
    assert policy.http.session_idle_timeout_s == 300 and not policy.http.clients


def test_load_policy_resolves_against_file_directory(tmp_path: Path) -> None:
    nested = tmp_path / "etc" / "bastion"
    nested.mkdir(parents=True)
    policy_file = nested / "policy.toml"
    policy_file.write_text('[[logs]]\npath = "../logs/app/*.log"\n[audit]\npath = "audit.jsonl"\n')
    policy = load_policy(policy_file)
    assert policy.logs[0].path == str(tmp_path / "etc" / "logs" / "app" / "*.log")
    assert policy.logs[0].is_glob
    assert policy.audit.path == str(nested / "audit.jsonl")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auth.log", "/srv/base/auth.log"),
        ("./logs/./auth.log", "/srv/base/logs/auth.log"),
        ("../other/auth.log", "/srv/other/auth.log"),
        ("/abs/auth.log", "/abs/auth.log"),
        ("/abs/../abs/x.log", "/abs/x.log"),
        ("dir/*.log", "/srv/base/dir/*.log"),
    ],
)
def test_relative_log_path_resolves_against_base(value: str, expected: str) -> None:
    policy = parse_policy(policy_with(logs=f'[[logs]]\npath = "{value}"\n'), Path("/srv/base"))
    assert policy.logs[0].path == expected


def test_defaults_and_hash() -> None:
    data = MINIMAL.encode()
    policy = parse_policy(data, Path("/"), source="here.toml")
    assert policy.limits == Limits()
    assert policy.workers == Workers()
    assert policy.source == "here.toml"
    assert policy.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (policy_with(extra="colour = 1"), "colour"),
        (policy_with(extra="[limitz]\nmax_lines = 1"), "limitz"),
        (policy_with(extra="[limits]\nmax_linez = 10"), "max_linez"),
        (policy_with(logs='[[logs]]\npath = "/a"\ndescriptoin = "x"\n'), "descriptoin"),
        (policy_with(logs='[[logs]]\npath = "/a"\n[[logs]]\npath = "/b"\nglob = true\n'), "glob"),
        (policy_with(audit='[audit]\npath = "/a.jsonl"\nmode = "0600"\n'), "mode"),
        (policy_with(extra="[workers]\nprestrat = 2"), "prestrat"),
    ],
    ids=["top", "section", "limits", "logs0", "logs1", "audit", "workers"],
)
def test_unknown_key_is_named(data: bytes, key: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(data, Path("/"))
    message = str(raised.value)
    assert key in message
    assert "unknown" in message


@pytest.mark.parametrize(
    ("data", "section"),
    [
        (policy_with(extra="[limits]\nmax_linez = 10"), "limits:"),
        (policy_with(logs='[[logs]]\npath = "/a"\n[[logs]]\npath = "/b"\nglob = true\n'), "logs[1]:"),
        (policy_with(audit='[audit]\npath = "/a.jsonl"\nmode = "0600"\n'), "audit:"),
    ],
)
def test_unknown_key_names_its_section(data: bytes, section: str) -> None:
    with pytest.raises(PolicyError, match=section.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(data, Path("/"))


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("max_lines = 0", "limits.max_lines"),
        ("max_lines = -5", "limits.max_lines"),
        ('max_lines = "ten"', "limits.max_lines"),
        ("max_lines = 10.0", "limits.max_lines"),
        ("max_lines = true", "limits.max_lines"),
        ("max_lines = 100001", "limits.max_lines"),
        ("timeout_s = -1", "limits.timeout_s"),
        ("timeout_s = 0", "limits.timeout_s"),
        ("timeout_s = 3601", "limits.timeout_s"),
        ("max_workers = 1000", "limits.max_workers"),
        ("max_workers = 0", "limits.max_workers"),
        ("max_output_bytes = 1023", "limits.max_output_bytes"),
        ("max_output_bytes = 10", "limits.max_output_bytes"),
        ("max_line_bytes = 63", "limits.max_line_bytes"),
        ("resource_bytes = 100", "limits.resource_bytes"),
        ("max_glob_files = 0", "limits.max_glob_files"),
        ("max_glob_files = 100001", "limits.max_glob_files"),
    ],
)
def test_bad_limit_value_is_named(setting: str, key: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(policy_with(extra=f"[limits]\n{setting}"), Path("/"))
    assert str(raised.value).startswith(f"{key}:")


@pytest.mark.parametrize(
    ("setting", "field", "value"),
    [
        ("max_lines = 1", "max_lines", 1),
        ("max_lines = 100000", "max_lines", 100000),
        ("timeout_s = 0.5", "timeout_s", 0.5),
        ("timeout_s = 3600", "timeout_s", 3600),
        ("max_workers = 256", "max_workers", 256),
        ("max_output_bytes = 1024", "max_output_bytes", 1024),
        ("max_line_bytes = 64", "max_line_bytes", 64),
    ],
)
def test_boundary_limit_values_accepted(setting: str, field: str, value: float) -> None:
    policy = parse_policy(policy_with(extra=f"[limits]\n{setting}"), Path("/"))
    assert getattr(policy.limits, field) == value


@pytest.mark.parametrize(
    ("setting", "ok"),
    [("prestart = 0", True), ("prestart = 16", True), ("prestart = 17", False), ("prestart = -1", False)],
)
def test_workers_prestart_bounds(setting: str, ok: bool) -> None:
    data = policy_with(extra=f"[workers]\n{setting}")
    if ok:
        parse_policy(data, Path("/"))
    else:
        with pytest.raises(PolicyError, match=r"^workers\.prestart:"):
            parse_policy(data, Path("/"))


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (policy_with(audit=""), "audit"),
        (policy_with(audit="[audit]\n"), "path"),
        (policy_with(logs=""), "logs"),
        (policy_with(logs="logs = []"), "logs"),
        (policy_with(logs='logs = "/var/log/auth.log"'), "logs"),
        (policy_with(logs='[[logs]]\ndescription = "no path"\n'), "path"),
        (policy_with(logs='[[logs]]\npath = ""\n'), "logs[0].path"),
        (policy_with(logs='[[logs]]\npath = "/var/log/**/x.log"\n'), "logs[0].path"),
        (policy_with(logs='[[logs]]\npath = "/a"\n[[logs]]\npath = "**"\n'), "logs[1].path"),
        (policy_with(logs='[[logs]]\npath = "/"\n'), "logs[0].path"),
        (policy_with(logs='[[logs]]\npath = "/var/log/a\\u0000.log"\n'), "logs[0].path"),
        (policy_with(audit='[audit]\npath = "/var/a\\u0000"\n'), "audit.path"),
        (policy_with(audit='[audit]\npath = ""\n'), "audit.path"),
        (policy_with(extra='source = "/etc/other.toml"'), "source"),
        (policy_with(extra='sha256 = "00"'), "sha256"),
        (b"[[logs]\npath = 1\n", "not valid TOML"),
        (b'[[logs]]\npath = "/a"\n[audit]\npath = "x"\n[audit]\npath = "y"\n', "not valid TOML"),
        (b"= = =", "not valid TOML"),
    ],
    ids=[
        "missing_audit",
        "audit_without_path",
        "missing_logs",
        "empty_logs",
        "logs_not_array",
        "log_without_path",
        "empty_log_path",
        "double_star",
        "double_star_second_entry",
        "root_dir",
        "nul_in_log_path",
        "nul_in_audit_path",
        "empty_audit_path",
        "reserved_source",
        "reserved_sha256",
        "bad_toml",
        "duplicate_table",
        "garbage",
    ],
)
def test_structural_errors(data: bytes, needle: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(data, Path("/srv"))
    assert needle in str(raised.value)


@pytest.mark.parametrize("value", ["/var/log/", "logs/", "/var/log/app/"])
def test_path_ending_in_slash_refused(value: str) -> None:
    with pytest.raises(PolicyError, match=r"logs\[0\]\.path"):
        parse_policy(policy_with(logs=f'[[logs]]\npath = "{value}"\n'), Path("/srv"))


def test_non_utf8_policy_is_policy_error(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_bytes(b'[[logs]]\npath = "/var/log/\xff.log"\n[audit]\npath = "/a"\n')
    with pytest.raises(PolicyError):
        load_policy(policy_file)


@pytest.mark.parametrize("name", ["missing.toml", "no/such/dir/policy.toml", ""])
def test_load_policy_unreadable_is_policy_error(tmp_path: Path, name: str) -> None:
    target = tmp_path / name if name else tmp_path  # "" -> a directory, which cannot be read as a file
    with pytest.raises(PolicyError, match="cannot read policy file") as raised:
        load_policy(target)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_load_policy_bad_content_names_key(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(MINIMAL + "\n[limits]\nmax_lines = 0\n")
    with pytest.raises(PolicyError, match=r"^limits\.max_lines:"):
        load_policy(policy_file)


@pytest.mark.parametrize(
    ("path", "is_glob"),
    [("/a/b.log", False), ("/a/*.log", True), ("/a/b?.log", True), ("/a/[ab].log", True), ("/a/{x}.log", False)],
)
def test_is_glob(path: str, is_glob: bool) -> None:
    policy = parse_policy(policy_with(logs=f'[[logs]]\npath = "{path}"\n'), Path("/"))
    assert policy.logs[0].is_glob is is_glob


def test_http_session_defaults() -> None:
    http = parse_policy(MINIMAL.encode(), Path("/")).http
    assert http == Http()
    assert (http.max_sessions, http.max_sessions_per_client, http.session_idle_timeout_s) == (32, 8, 300)


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("max_sessions = 0", "http.max_sessions"),
        ("max_sessions = 1001", "http.max_sessions"),
        ("max_sessions_per_client = 0", "http.max_sessions_per_client"),
        ("max_sessions_per_client = 1001", "http.max_sessions_per_client"),
        ('max_sessions_per_client = "8"', "http.max_sessions_per_client"),
        ("session_idle_timeout_s = 0", "http.session_idle_timeout_s"),
        ("session_idle_timeout_s = 0.5", "http.session_idle_timeout_s"),
        ("session_idle_timeout_s = -300", "http.session_idle_timeout_s"),
        ("session_idle_timeout_s = 86401", "http.session_idle_timeout_s"),
        ("session_idle_timeout_s = nan", "http.session_idle_timeout_s"),
        ("session_idle_timeout_s = inf", "http.session_idle_timeout_s"),
        ("session_idle_timeout_s = true", "http.session_idle_timeout_s"),
    ],
)
def test_bad_http_session_value_is_named(setting: str, key: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(policy_with(extra=f"[http]\n{setting}"), Path("/"))
    assert str(raised.value).startswith(f"{key}:"), raised.value


@pytest.mark.parametrize(
    ("setting", "field", "value"),
    [
        ("max_sessions_per_client = 1", "max_sessions_per_client", 1),
        ("max_sessions_per_client = 32", "max_sessions_per_client", 32),  # equal to max_sessions
        ("max_sessions = 1000\nmax_sessions_per_client = 1000", "max_sessions_per_client", 1000),
        ("max_sessions = 2", "max_sessions_per_client", 8),  # above max_sessions: that cap binds first
        ("session_idle_timeout_s = 1", "session_idle_timeout_s", 1),
        ("session_idle_timeout_s = 86400", "session_idle_timeout_s", 86400),
        ("session_idle_timeout_s = 2.5", "session_idle_timeout_s", 2.5),
    ],
)
def test_boundary_http_session_values_accepted(setting: str, field: str, value: float) -> None:
    policy = parse_policy(policy_with(extra=f"[http]\n{setting}"), Path("/"))
    assert getattr(policy.http, field) == value
