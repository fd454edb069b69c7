"""Redaction of secrets in JSON-like values and free text (broker.audit.redact)."""

from __future__ import annotations

import copy
import random

import pytest

from broker.audit.redact import _MAY_HOLD_SECRET, REDACTED, redact, redact_shapes, redact_text

R = REDACTED
HEX40 = "0123456789abcdef0123456789abcdef01234567"
HEX64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
B64 = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRkdI"  # 40 chars: digits, both cases
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
SSHD_FAILED = "Nov 24 00:13:16 web-01 sshd[20713]: Failed password for invalid user admin from 203.0.113.7 port 22 ssh2"

SENSITIVE_KEYS = [
    "password",
    "PassWord",
    "db_password",
    "passwd",
    "secret",
    "ClientSecret",
    "client_secret",
    "token",
    "TOKEN",
    "refresh_token",
    "X-Auth-Token",
    "api_key",
    "apikey",
    "api-key",
    "API_KEY",
    "Api_Key",
    "ApiKey",
    "X-Api-Key",
    "credential",
    "aws_credentials",
    "authorization",
    "Proxy-Authorization",
    "cookie",
    "set-cookie",
    "Set-Cookie",
    "private_key",
    "privatekey",
    "Private-Key",
    "privateKey",
    "session",
    "SessionId",
    "session_id",
    "aws_secret_access_key",
]
NON_SENSITIVE_KEYS = ["user", "host", "key", "keyboard", "path", "author", "pass", "api", "private", "policy_sha256"]


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", SENSITIVE_KEYS)
def test_sensitive_key_hides_its_value(key: str) -> None:
    assert redact({key: "v4lue-1", "user": "bob"}) == {key: R, "user": "bob"}


@pytest.mark.parametrize("key", NON_SENSITIVE_KEYS)
def test_other_keys_keep_their_value(key: str) -> None:
    assert redact({key: "v4lue-1"}) == {key: "v4lue-1"}


@pytest.mark.parametrize("value", [0, 42, -1.5, True, False, ["a", "b"], ("t",), {"nested": "x"}, [], {}, [None]])
def test_sensitive_key_hides_a_value_of_any_type(value: object) -> None:
    assert redact({"Session": value, "n": 1}) == {"Session": R, "n": 1}


@pytest.mark.parametrize("value", [None, ""])
def test_sensitive_key_with_nothing_to_hide_is_kept(value: object) -> None:
    assert redact({"password": value, "api_key": value}) == {"password": value, "api_key": value}


def test_sensitive_keys_at_any_depth() -> None:
    value = {
        "outer": [{"inner": {"API_KEY": "k-123", "name": "n"}}, {"list": [{"Token": "t", "ok": [1, 2]}]}],
        "headers": {"Set-Cookie": ["a=b", "c=d"], "Accept": "text/plain"},
        "n": 3,
    }
    assert redact(value) == {
        "outer": [{"inner": {"API_KEY": R, "name": "n"}}, {"list": [{"Token": R, "ok": [1, 2]}]}],
        "headers": {"Set-Cookie": R, "Accept": "text/plain"},
        "n": 3,
    }


def test_keys_are_kept_as_strings() -> None:
    assert redact({1: "a", None: "b", 2.5: [1], ("t",): "c"}) == {"1": "a", "None": "b", "2.5": [1], "('t',)": "c"}


# --- structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, True, False, 0, 7, -3.25, "plain text", ""])
def test_scalars_are_kept(value: object) -> None:
    result = redact(value)
    assert result == value and type(result) is type(value)


def test_tuples_become_lists() -> None:
    assert redact(("a", ("b", {"token": "t"}))) == ["a", ["b", {"token": R}]]


class _Secretive:
    def __str__(self) -> str:
        return "conn password=hunter2 ok"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_Secretive(), f"conn password={R} ok"),
        (b"token=abc123", f"b'token={R}'"),
        ({"only"}, "{'only'}"),
    ],
)
def test_other_objects_become_redacted_strings(value: object, expected: str) -> None:
    assert redact(value) == expected


def test_shapes_are_found_in_strings_at_any_depth() -> None:
    value = {
        "msg": ["call with Bearer abc123 done", {"note": f"key AKIAIOSFODNN7EXAMPLE, jwt {JWT}"}],
        "cmd": ("curl", "https://x.test/?user=bob&token=abc123"),
        "sha": HEX40,  # a bare hash in a value is not an assignment: kept
    }
    assert redact(value) == {
        "msg": [f"call with Bearer {R} done", {"note": f"key {R}, jwt {R}"}],
        "cmd": ["curl", f"https://x.test/?user=bob&token={R}"],
        "sha": HEX40,
    }


def test_input_is_not_mutated() -> None:
    value = {"password": "p", "list": [{"token": "t"}, "Bearer abc123", ("x", {"k": "v"})], "n": {"m": []}}
    before = copy.deepcopy(value)
    result = redact(value)
    assert value == before
    assert result is not value and result["list"] is not value["list"]  # type: ignore[index]
    assert result["n"] is not value["n"] and result["n"]["m"] is not value["n"]["m"]  # type: ignore[index]


def _nest(levels: int, leaf: object, kind: str) -> object:
    for _ in range(levels):
        leaf = [leaf] if kind == "list" else {"k": leaf}
    return leaf


def _inner(value: object, levels: int) -> object:
    for _ in range(levels):
        value = value[0] if isinstance(value, list) else value["k"]  # type: ignore[index]
    return value


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_depth_64_is_redacted_normally(kind: str) -> None:
    assert _inner(redact(_nest(64, "token=abc", kind)), 64) == f"token={R}"


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deeper_than_64_becomes_too_deep(kind: str) -> None:
    result = redact(_nest(65, "token=abc", kind))
    assert _inner(result, 64) == (["[TOO DEEP]"] if kind == "list" else {"k": "[TOO DEEP]"})


def test_very_deep_nesting_does_not_recurse_without_limit() -> None:
    assert _inner(redact(_nest(100_000, "x", "list")), 65) == "[TOO DEEP]"


def test_cycles_are_cut() -> None:
    looped: dict[str, object] = {"name": "x"}
    looped["self"] = looped
    items: list[object] = [1]
    items.append(items)
    first: dict[str, object] = {}
    first["second"] = {"first": first, "password": "p"}
    assert redact(looped) == {"name": "x", "self": "[CYCLE]"}
    assert redact(items) == [1, "[CYCLE]"]
    assert redact(first) == {"second": {"first": "[CYCLE]", "password": R}}


def test_a_container_shared_by_siblings_is_not_a_cycle() -> None:
    shared = {"token": "t", "user": "u"}
    assert redact([shared, {"again": shared}]) == [{"token": R, "user": "u"}, {"again": {"token": R, "user": "u"}}]


# --- values by shape in text -----------------------------------------------------------------

TEXT_CASES = [
    # Bearer / Basic
    ("sent Bearer abc123.def-456 to api", f"sent Bearer {R} to api"),
    ("got basic dXNlcjpwYXNz from client", f"got basic {R} from client"),
    ("BEARER Token123 expired", f"BEARER {R} expired"),
    ("Bearer Bearer abc123", f"Bearer Bearer {R}"),
    # JWT
    (f"jwt {JWT} end", f"jwt {R} end"),
    ("unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. here", f"unsigned {R} here"),
    # AWS
    ("key AKIAIOSFODNN7EXAMPLE in use", f"key {R} in use"),
    (f"aws_secret_access_key={AWS_SECRET}\nregion=us-east-1", f"aws_secret_access_key={R}\nregion=us-east-1"),
    (
        f'{{"aws_secret_access_key": "{AWS_SECRET}", "region": "eu-west-1"}}',
        f'{{"aws_secret_access_key": "{R}", "region": "eu-west-1"}}',
    ),
    (f"AWS_SECRET_ACCESS_KEY: {AWS_SECRET}", f"AWS_SECRET_ACCESS_KEY: {R}"),
    # PEM private keys
    (
        "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----\nb",
        f"a\n-----BEGIN RSA PRIVATE KEY-----{R}-----END RSA PRIVATE KEY-----\nb",
    ),
    ("x -----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\nno end line", f"x -----BEGIN EC PRIVATE KEY-----{R}"),
    ("-----BEGIN RSA PRIVATE KEY-----\nAA\n-----END EC PRIVATE KEY-----\nrest", f"-----BEGIN RSA PRIVATE KEY-----{R}"),
    (
        "-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n",
        f"-----BEGIN PRIVATE KEY-----{R}-----END PRIVATE KEY-----\\n",
    ),
    (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nxcE\n-----END PGP PRIVATE KEY BLOCK-----",
        f"-----BEGIN PGP PRIVATE KEY BLOCK-----{R}-----END PGP PRIVATE KEY BLOCK-----",
    ),
    # key=value, key: value, headers
    ("GET /login?user=bob&token=abc123&x=1 HTTP/1.1", f"GET /login?user=bob&token={R}&x=1 HTTP/1.1"),
    ("user=bob&password=hunter2&remember=1", f"user=bob&password={R}&remember=1"),
    ("password: hunter2", f"password: {R}"),
    ("run --password=hunter2 --verbose", f"run --password={R} --verbose"),
    ("client_secret = s3cr3t!", f"client_secret = {R}"),
    ("Authorization: Basic xyz", f"Authorization: {R}"),
    ("Proxy-Authorization: Bearer abc def\nHost: x", f"Proxy-Authorization: {R}\nHost: x"),
    ("Cookie: a=b; c=d\nAccept: */*", f"Cookie: {R}\nAccept: */*"),
    ("set-cookie: sid=abc; HttpOnly", f"set-cookie: {R}"),
    ("X-Api-Key: k-123 next=1", f"X-Api-Key: {R} next=1"),
    ("SessionId=42; lang=en", f"SessionId={R}; lang=en"),
    ('{"password": "hunter2", "user": "bob"}', f'{{"password": "{R}", "user": "bob"}}'),
    ("{'token': 'abc def'}", f"{{'token': '{R}'}}"),
    ('"password": "a\\"b c", "n": 1', f'"password": "{R}", "n": 1'),
    ("(password=hunter2)", f"(password={R})"),
    ("next=https://x.test/cb?session=abc123&y=2", f"next=https://x.test/cb?session={R}&y=2"),
    ("token=Bearer abc123", f"token={R} {R}"),
    ("secrets.yml:3:password: hunter2", f"secrets.yml:3:password: {R}"),
    ("postgres://app:hunter2@db:5432/app", f"postgres://app:{R}@db:5432/app"),
    # long random values under any key name
    (f"sig={HEX64}&x=1", f"sig={R}&x=1"),
    (f"?x=1&signature={B64}&y=2", f"?x=1&signature={R}&y=2"),
    (f'"nonce": "{B64}"', f'"nonce": "{R}"'),
    ("data=QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY3ODk=", f"data={R}"),
    (f"deployed commit={HEX40} ok", f"deployed commit={R} ok"),
]

UNCHANGED = [
    SSHD_FAILED,
    "pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)",
    "Nov 24 00:09:01 web-01 systemd[1]: phpsessionclean.service: Deactivated successfully.",
    "systemd[1]: session-1843.scope: Deactivated successfully.",
    "Accepted publickey for ops from 10.0.1.6 port 54876 ssh2: RSA SHA256:X2dJtlRUCDlKVo7HeE82NRNwPf6sQGQa6MGR7uSvZyA",
    "the password and the token were rotated, session closed",
    "Basic auth failed for user bob",
    "Bearer token expired.",
    "connect 203.0.113.7:8080 and [2001:db8:85a3::8a2e:370:7334]:443 via fe80::1%eth0",
    "ip=10.0.0.1 at 2026-11-24T00:13:16.123456+00:00 [24/Nov/2026:00:13:16 +0000] 12:34:56",
    "tail /var/log/auth.log",
    "path=/home/alice/Projects/app2/src/main/Foo1.py file=/usr/lib/python3/dist-packages/Some2Thing/x",
    "request_id=550e8400-e29b-41d4-a716-446655440000 trace=550E8400-E29B-41D4-A716-446655440000",
    "id=abc123 x=AbC123 short=0123456789abcdef",
    "word=supercalifragilisticexpialidocious",
    "q=" + "A" * 100 + " checksum=" + "0" * 64,
    "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n-----BEGIN CERTIFICATE-----\nMIIB",
    "XAKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPLEX akiaiosfodnn7example",
    "eyJhbGciOiJIUzI1NiJ9 has no dots",
    "password=&user=bob",
    'password: "" and token=',
    f"password={R}",
]


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_secret_shapes_in_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact(text) == expected


@pytest.mark.parametrize("text", UNCHANGED)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact_text(text) == text


def test_a_commit_hash_in_prose_is_kept_but_as_key_value_is_redacted() -> None:
    assert redact_text(f"commit {HEX40} fixes #12") == f"commit {HEX40} fixes #12"
    assert redact_text(f"commit={HEX40}") == f"commit={R}"


@pytest.mark.parametrize("prefix", ["AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"])
def test_every_aws_key_id_prefix(prefix: str) -> None:
    assert redact_text(f"id {prefix}ABCDEFGHIJ234567, ok") == f"id {R}, ok"


@pytest.mark.parametrize("label", ["", "RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED "])
def test_every_pem_private_key_label(label: str) -> None:
    pem = f"-----BEGIN {label}PRIVATE KEY-----\nb64body\n-----END {label}PRIVATE KEY-----"
    assert redact_text(f"key:\n{pem}\ndone") == (
        f"key:\n-----BEGIN {label}PRIVATE KEY-----{R}-----END {label}PRIVATE KEY-----\ndone"
    )


def test_two_pem_keys_keep_the_text_between_them() -> None:
    one = "-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----"
    assert redact_text(f"{one} between {one}") == (
        f"-----BEGIN PRIVATE KEY-----{R}-----END PRIVATE KEY----- between -----BEGIN PRIVATE KEY-----{R}"
        "-----END PRIVATE KEY-----"
    )


@pytest.mark.parametrize("key", SENSITIVE_KEYS)
def test_every_sensitive_key_in_text(key: str) -> None:
    assert redact_text(f"{key}=v4lue-1 next=ok") == f"{key}={R} next=ok"
    assert redact_text(f'{{"{key}": "v4lue 1", "n": 2}}') == f'{{"{key}": "{R}", "n": 2}}'


# --- idempotence and hostile input -----------------------------------------------------------


@pytest.mark.parametrize("text", [text for text, _ in TEXT_CASES] + UNCHANGED)
def test_redacting_text_twice_changes_nothing_more(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


def test_redacting_a_structure_twice_changes_nothing_more() -> None:
    looped: dict[str, object] = {"msg": [text for text, _ in TEXT_CASES], "password": {"a": 1}, "e": ""}
    looped["self"] = looped
    once = redact({"a": looped, "deep": _nest(70, "x", "dict"), "t": ("Bearer abc123",)})
    assert redact(once) == once


ONE_MB = 1_000_000
ADVERSARIAL = [
    ("a=" + "A" * ONE_MB, "a=" + "A" * ONE_MB),  # one letter repeated is padding, not a secret
    ("token=" + "A" * ONE_MB, f"token={R}"),
    ("x=" + "A1b" * (ONE_MB // 3), f"x={R}"),
    ("-----BEGIN PRIVATE KEY-----" * 20_000, f"-----BEGIN PRIVATE KEY-----{R}"),
    ("Bearer " * 100_000, "Bearer " * 100_000),
    ("Bearer " * 100_000 + "abc123", "Bearer " * 100_000 + R),
    ("a=" * (ONE_MB // 2), "a=" * (ONE_MB // 2)),
    ("token=a " * (ONE_MB // 8), f"token={R} " * (ONE_MB // 8)),
    ("eyJ-" * (ONE_MB // 4), "eyJ-" * (ONE_MB // 4)),
    ("token" * (ONE_MB // 5), "token" * (ONE_MB // 5)),
    ("k" + " " * ONE_MB + ":", "k" + " " * ONE_MB + ":"),
    ("a." * (ONE_MB // 2) + "token: x", "a." * (ONE_MB // 2) + "token: x"),
    ("X-" * (ONE_MB // 2) + "Authorization: x", "X-" * (ONE_MB // 2) + f"Authorization: {R}"),
    ("://a:b" * (ONE_MB // 6), "://a:b" * (ONE_MB // 6)),
    ("-----BEGIN " * (ONE_MB // 11), "-----BEGIN " * (ONE_MB // 11)),
    ('password="' + "\\a" * (ONE_MB // 2), f'password="{R}'),
]


@pytest.mark.parametrize(("text", "expected"), ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_hostile_megabyte_strings(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_constant() -> None:
    assert REDACTED == "[REDACTED]"


# --- the pre-check that skips the patterns: it must never skip a secret -------------

_FRAGMENTS = [
    "a",
    "Z",
    "0",
    "9",
    " ",
    "\t",
    "\n",
    ":",
    "=",
    "/",
    "@",
    "-",
    "_",
    ".",
    "+",
    '"',
    "'",
    "-----BEGIN ",
    "PRIVATE KEY-----",
    "-----END ",
    "eyJ",
    "eyJhbGciOiJIUzI1NiJ9",
    "Bearer ",
    "basic ",
    "AKIA",
    "ASIA",
    "AIPA",
    "ABCDEFGHIJKLMNOP",
    "password",
    "token",
    "api_key",
    "Cookie",
    "https://",
    "0123456789abcdef0123456789abcdef",
    "QmFzZTY0U3RyaW5nV2l0aE1peGVkQ2FzZTEyMzQ1",
    "sshd[42]",
    "root",
]


def _random_texts(count: int, seed: int, fragments: list[str] = _FRAGMENTS) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(fragments) for _ in range(rng.randint(0, 24))) for _ in range(count)]


@pytest.mark.parametrize("seed", range(4))
def test_the_pre_check_changes_no_result(seed: int) -> None:
    for text in _random_texts(2000, seed):
        assert redact_text(text) == redact_shapes(text), text


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_every_known_secret_passes_the_pre_check(text: str, expected: str) -> None:
    assert redact_shapes(text) == expected == redact_text(text)


@pytest.mark.parametrize("seed", range(4))
def test_text_without_a_trigger_holds_no_secret_shape(seed: int) -> None:
    """The pre-check's claim: the patterns change nothing in a text it lets through unexamined."""
    quiet = [fragment for fragment in _FRAGMENTS if _MAY_HOLD_SECRET.search(fragment) is None]
    assert len(quiet) >= 15
    for text in _random_texts(2000, seed, quiet):
        if _MAY_HOLD_SECRET.search(text) is None:
            assert redact_shapes(text) == text, text
