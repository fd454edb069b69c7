"""A log path as text: the checks a client's path passes before any file is touched, the
segment-by-segment glob match of the allowlist, and the closest allowlisted paths a
refusal names (broker/files/allowlist.py)."""

from __future__ import annotations

import difflib
import os
from fnmatch import fnmatchcase

from broker.errors import ToolError

MAX_PATH_BYTES = 4096
CLOSEST = 3  # allowlisted paths a refusal names
CLOSEST_CUTOFF = 0.6  # difflib's similarity ratio below which a name is not offered


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


def check_path_text(value: object, name: str = "log_path") -> str:
    """Syntactic checks that need no filesystem access."""
    if not isinstance(value, str) or not value:
        raise ToolError(f"{name} must be a non-empty string")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError(f"{name} contains characters that are not valid Unicode") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise ToolError(f"{name} is longer than {MAX_PATH_BYTES} bytes")
    if _has_control(value):
        raise ToolError(f"{name} contains NUL or control characters")
    if not value.startswith("/"):
        raise ToolError(f"{name} must be an absolute path")
    if os.path.normpath(value) != value or value.startswith("//"):
        raise ToolError(f"{name} must be a normalized path (no '..', '.', '//' or trailing '/')")
    return value


def segment_matches(have: str, want: str) -> bool:
    # As in shell globs, a wildcard never matches a leading dot (hidden files).
    if have.startswith(".") and not want.startswith("."):
        return False
    return fnmatchcase(have, want)


def segments_match(pattern: str, path: str) -> bool:
    want, have = pattern.split("/"), path.split("/")
    return len(want) == len(have) and all(segment_matches(h, w) for w, h in zip(want, have, strict=True))


def closest(path: str, names: list[str]) -> list[str]:
    """The CLOSEST names most like `path`: its directory and its file name compared each on
    its own (difflib's ratio, 1 where a glob matches it) and the two multiplied, so that a
    mistyped name finds its file and not every neighbour in the same directory, and a
    file in the wrong directory finds the same name in the right one."""
    scored = [(score, name) for name in names if (score := _likeness(path, name)) >= CLOSEST_CUTOFF]
    return [name for _, name in sorted(scored, key=lambda item: -item[0])[:CLOSEST]]


def _likeness(path: str, name: str) -> float:
    (have_dir, have_file), (want_dir, want_file) = os.path.split(path), os.path.split(name)
    file_score = 1.0 if segment_matches(have_file, want_file) else _ratio(have_file, want_file)
    if file_score < CLOSEST_CUTOFF:  # the product cannot reach it: spare the longer comparison
        return 0.0
    return file_score * (1.0 if segments_match(want_dir, have_dir) else _ratio(have_dir, want_dir))


def _ratio(a: str, b: str) -> float:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.ratio() if matcher.quick_ratio() >= CLOSEST_CUTOFF else 0.0
