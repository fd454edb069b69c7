"""Redaction of secrets in JSON-like values before they are written or shown.

Two layers: a dict key that names a secret hides its whole value, and inside
every string secrets are found by shape (credentials in headers and key=value
pairs, bearer tokens, JWTs, AWS keys, PEM private keys, long random values).

The input is hostile, so every pattern is linear-time: runs are possessive
(Python 3.11) or bounded, and a run is only tried where it begins (a
lookbehind rules out starting inside it), so nothing is rescanned per start.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"
TOO_DEEP = "[TOO DEEP]"
CYCLE = "[CYCLE]"
MAX_DEPTH = 64

# Key words; a separator is allowed inside the multiword ones (api_key, privateKey).
_KEY_WORDS = (
    r"password|passwd|secret|token|api[-_. ]?key|credential|authorization"
    r"|cookie|private[-_. ]?key|session"
)
_SENSITIVE_KEY = re.compile(_KEY_WORDS, re.IGNORECASE)

_KEY_CHAR = r"[A-Za-z0-9_.-]"
# Closing quote of a quoted key, then `=` or `:` with optional blanks around it.
_SEP = r"[\"']?+[ \t]*+[=:][ \t]*+"
# What ends an unquoted value; `)]}` so that "(password=x)" keeps its bracket.
_STOP = r"\s&;,\"')\]}"

# PEM private keys: BEGIN line to the END line with the same label, else to the end.
_PEM = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]{0,40}?)PRIVATE KEY(?P<block>(?: BLOCK)?)-----"
    r"(?P<secret>.*?)(?:-----END (?P=label)PRIVATE KEY(?P=block)-----|\Z)",
    re.DOTALL,
)
# Headers whose whole value is a credential (Cookie: a=b; c=d): redact to the end of line.
_HEADER = re.compile(
    r"(?<![A-Za-z0-9_-])(?:[A-Za-z0-9]++[-_])*+(?i:authorization|cookie)[ \t]*+:[ \t]*+"
    r"(?P<secret>[^\s\"'][^\r\n]*+)"
)
# Password in a URL: scheme://user:password@host.
_USERINFO = re.compile(r"(?<=://)[^\s/:@]{1,256}+:(?P<secret>[^\s/@]{1,256}+)(?=@)")
_TOKEN_CHAR = r"[A-Za-z0-9._~+/=-]"
# Bearer/Basic credentials; a plain word after them is prose ("Basic auth failed").
_BEARER = re.compile(rf"\b(?i:bearer|basic)[ \t]++(?![A-Za-z][a-z]*+\.?+(?!{_TOKEN_CHAR}))(?P<secret>{_TOKEN_CHAR}++)")
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]++\.[A-Za-z0-9_-]++\.[A-Za-z0-9_-]*+")
_AWS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Za-z0-9])")
# key=value / key: value / "key": "value" where the key names a secret. A dotted
# name before a bare colon is a file or unit, not a field ("phpsessionclean.service:
# Deactivated", "secrets.yml:3:"). A value already redacted is matched first so
# that a second pass leaves it alone.
_SENSITIVE_PAIR = re.compile(
    rf"(?<!{_KEY_CHAR})(?![A-Za-z0-9_-]*+\.{_KEY_CHAR}*+[ \t]*+:)"
    rf"(?={_KEY_CHAR}{{0,64}}?(?i:{_KEY_WORDS})){_KEY_CHAR}{{1,64}}+{_SEP}"
    r"(?:\[REDACTED\]"
    r"|\"(?P<dq>(?:[^\"\\\r\n]|\\.)*+)\"?"
    r"|'(?P<sq>(?:[^'\\\r\n]|\\.)*+)'?"
    rf"|(?P<bare>[^{_STOP}]++))"
)
# Any key whose value is a long run of hex or base64 (checked by _looks_random).
_LONG_VALUE = re.compile(
    rf"(?<!{_KEY_CHAR})(?P<key>{_KEY_CHAR}{{1,64}}+){_SEP}[\"']?+"
    rf"(?P<secret>[A-Za-z0-9+/_-]{{32,}}+=*+)(?=[{_STOP}]|\Z)"
)
# A digest is public by nature: keep "SHA256:<ssh key fingerprint>" readable.
_DIGEST_KEY = re.compile(r"md5|sha-?(?:1|224|256|384|512)", re.IGNORECASE)
_HEX_DIGITS = set("0123456789abcdefABCDEF")
_DIGITS, _UPPER, _LOWER = set("0123456789"), set("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), set("abcdefghijklmnopqrstuvwxyz")


def redact(value: object) -> object:
    """Return a redacted deep copy of a JSON-like value; tuples become lists, other objects strings."""
    return _walk(value, 0, set())


# Every shape above needs one of these: a `:` or `=` (headers, URLs, pairs, long
# values), a PEM armour line, a JWT's "eyJ", the word bearer/basic, or an AWS
# key id prefix. Most argument strings (paths, patterns, addresses) have none,
# and one search for them is far cheaper than running all eight patterns.
_MAY_HOLD_SECRET = re.compile(r"[:=]|-----BEGIN |eyJ|(?i:bearer|basic)|A(?:KI|SI|GP|ID|RO|NP|NV|IP)A")


def redact_text(text: str) -> str:
    """Redact the secrets found by shape in free text, keeping the text around them."""
    if _MAY_HOLD_SECRET.search(text) is None:
        return text
    return redact_shapes(text)


def redact_shapes(text: str) -> str:
    """redact_text without the pre-check (the tests compare the two)."""
    text = _PEM.sub(_mask, text)  # first: the key body must not be cut up by later rules
    text = _HEADER.sub(_mask, text)
    text = _USERINFO.sub(_mask, text)
    text = _BEARER.sub(_mask, text)  # before pairs: "token=Bearer x" must lose x too
    text = _JWT.sub(REDACTED, text)
    text = _AWS_KEY_ID.sub(REDACTED, text)
    text = _SENSITIVE_PAIR.sub(_mask_pair, text)
    return _LONG_VALUE.sub(_mask_long_value, text)


def _walk(value: object, depth: int, ancestors: set[int]) -> object:
    if depth > MAX_DEPTH:
        return TOO_DEEP
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if not isinstance(value, (dict, list, tuple)):
        return redact_text(str(value))
    if id(value) in ancestors:  # only ancestors: a container shared by siblings is no cycle
        return CYCLE
    ancestors.add(id(value))
    try:
        if isinstance(value, dict):
            return {name: _walk_item(name, item, depth + 1, ancestors) for name, item in _named(value)}
        return [_walk(item, depth + 1, ancestors) for item in value]
    finally:
        ancestors.discard(id(value))


def _named(mapping: dict[object, object]) -> list[tuple[str, object]]:
    return [(str(key), item) for key, item in mapping.items()]


def _walk_item(key: str, value: object, depth: int, ancestors: set[int]) -> object:
    blank = value is None or (isinstance(value, str) and not value)  # nothing to hide
    if depth <= MAX_DEPTH and not blank and _SENSITIVE_KEY.search(key):
        return REDACTED  # whatever the type: no part of it is shown
    return _walk(value, depth, ancestors)


def _mask(match: re.Match[str], group: str = "secret") -> str:
    """The match with only `group` replaced, so the text around the secret stays readable."""
    whole = match.string
    return whole[match.start() : match.start(group)] + REDACTED + whole[match.end(group) : match.end()]


def _mask_pair(match: re.Match[str]) -> str:
    for group in ("dq", "sq", "bare"):
        if match[group]:  # None: another alternative matched; "": nothing to hide
            return _mask(match, group)
    return match[0]


def _mask_long_value(match: re.Match[str]) -> str:
    if _DIGEST_KEY.fullmatch(match["key"]) or not _looks_random(match["secret"].rstrip("=")):
        return match[0]
    return _mask(match)


def _looks_random(token: str) -> bool:
    """Hex with digits and letters, or base64 with digits, mixed case and few separators.

    A run of one kind ("AAAA...", "0000...") is padding, and many separators
    make a path or a slug.
    """
    chars = set(token)
    if chars <= _HEX_DIGITS:
        return bool(chars & _DIGITS) and bool(chars - _DIGITS)
    separators = sum(token.count(char) for char in "+/_-")
    return bool(chars & _DIGITS and chars & _UPPER and chars & _LOWER) and separators * 8 <= len(token)
