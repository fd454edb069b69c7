"""Make untrusted log bytes safe to hand to a model or a terminal.

Invalid UTF-8 becomes U+FFFD. Control characters (C0 except tab, DEL, C1),
and the invisible format characters used to reorder or hide text (bidi
overrides and isolates, line/paragraph separators) are written as visible
escapes such as \\x1b or \\u202e, so a log line can neither drive a terminal
nor disguise what it says, nor carry text that is invisible to a human. Backslashes are left as they are.
"""

from __future__ import annotations

# Bidi controls, line/paragraph separators, zero-width and other invisible
# format characters, and the tag block (which can smuggle text that a model
# reads but a human reviewing the output does not see).
_INVISIBLE = [
    0x00AD,
    0x061C,
    0x180E,
    *range(0x200B, 0x2010),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2060, 0x2065),
    *range(0x2066, 0x2070),
    0xFEFF,
    *range(0xFFF9, 0xFFFC),
    *range(0xE0000, 0xE0080),
]

_TABLE: dict[int, str] = {c: f"\\x{c:02x}" for c in range(0x20) if c != 0x09}
_TABLE[0x7F] = "\\x7f"
_TABLE.update({c: f"\\u{c:04x}" for c in range(0x80, 0xA0)})
_TABLE.update({c: f"\\u{c:04x}" for c in _INVISIBLE})


def clean_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").translate(_TABLE)


def clean_line(raw: bytes, total_length: int) -> str:
    """Sanitize a line of which only `raw` (a prefix) was kept out of total_length bytes."""
    text = clean_text(raw)
    cut = total_length - len(raw)
    return f"{text}…[line cut: {cut} more bytes]" if cut > 0 else text
