"""Sanitizing untrusted log bytes (workers.sanitize) and splitting them into capped lines (workers.lines)."""

from __future__ import annotations

import random
import unicodedata

import pytest

from workers.lines import LineSplitter
from workers.sanitize import clean_line, clean_text

BIDI_CONTROLS = [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def assert_safe(text: str) -> None:
    """No C0 except tab, no DEL/C1, no bidi control, no line/paragraph separators."""
    for char in text:
        code = ord(char)
        assert code >= 0x20 or char == "\t", repr(text)
        assert not 0x7F <= code <= 0x9F, repr(text)
        assert code not in BIDI_CONTROLS and code not in (0x2028, 0x2029, 0xFEFF), repr(text)
    assert len(text.splitlines()) <= 1, repr(text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"plain ascii", "plain ascii"),
        (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        (b"a\x00b", "a\\x00b"),
        (b"bell\x07", "bell\\x07"),
        (b"del\x7f", "del\\x7f"),
        (b"cr\rlf\n", "cr\\x0dlf\\x0a"),
        (b"\x08\x0b\x0c", "\\x08\\x0b\\x0c"),
        (b"\x1c\x1d\x1e\x1f", "\\x1c\\x1d\\x1e\\x1f"),
        (b"col1\tcol2", "col1\tcol2"),
        (b"nel\xc2\x85", "nel\\u0085"),
        (b"csi\xc2\x9b2J", "csi\\u009b2J"),
        (b"\xc2\x80\xc2\x9f", "\\u0080\\u009f"),
        ("evil\u202etxt.exe".encode(), "evil\\u202etxt.exe"),
        ("a\u2028b\u2029c".encode(), "a\\u2028b\\u2029c"),
        ("\u2066x\u2067y\u2068z\u2069".encode(), "\\u2066x\\u2067y\\u2068z\\u2069"),
        ("\u200e\u200f".encode(), "\\u200e\\u200f"),
        ("\u202a\u202b\u202c\u202d".encode(), "\\u202a\\u202b\\u202c\\u202d"),
        ("\ufeffbom".encode(), "\\ufeffbom"),
        ("café 日本 🙂".encode(), "café 日本 🙂"),
        (b"back\\slash \\x1b", "back\\slash \\x1b"),
        (b"\xff", "\ufffd"),
        (b"a\xc3(b", "a\ufffd(b"),
        (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),  # encoded surrogate
        (b"\xc0\xaf", "\ufffd\ufffd"),  # overlong '/'
        (b"\xf4\x90\x80\x80", "\ufffd\ufffd\ufffd\ufffd"),  # > U+10FFFF
        (b"", ""),
    ],
)
def test_clean_text(raw: bytes, expected: str) -> None:
    assert clean_text(raw) == expected
    assert_safe(clean_text(raw))


@pytest.mark.parametrize("code", [*range(0x20), 0x7F, *range(0x80, 0xA0), *BIDI_CONTROLS, 0x2028, 0x2029, 0xFEFF])
def test_every_dangerous_code_point_is_escaped_visibly(code: int) -> None:
    if code == 0x09:
        assert clean_text(b"\t") == "\t"
        return
    out = clean_text(chr(code).encode())
    assert out in (f"\\x{code:02x}", f"\\u{code:04x}")
    assert_safe(out)


def test_arabic_letter_mark_is_escaped() -> None:
    assert unicodedata.category("\u061c") == "Cf"
    assert clean_text("a\u061cb".encode()) == "a\\u061cb"


@pytest.mark.parametrize("text", ["é", "日本", "ß", "Ω", "🙂", "\u00a0", "\u00ff", "\u0100"])
def test_printable_non_ascii_kept(text: str) -> None:
    assert clean_text(text.encode()) == text


@pytest.mark.parametrize(
    ("raw", "total", "expected"),
    [
        (b"short", 5, "short"),
        (b"short", 4, "short"),  # total below kept: no marker
        (b"abcd", 10, "abcd…[line cut: 6 more bytes]"),
        (b"", 3, "…[line cut: 3 more bytes]"),
        (b"\x1b[2J", 1_000_000, "\\x1b[2J…[line cut: 999996 more bytes]"),
        ("日".encode()[:2], 3, "\ufffd…[line cut: 1 more bytes]"),
        ("aé".encode()[:2], 3, "a\ufffd…[line cut: 1 more bytes]"),
        ("🙂".encode()[:3], 4, "\ufffd…[line cut: 1 more bytes]"),
    ],
)
def test_clean_line(raw: bytes, total: int, expected: str) -> None:
    assert clean_line(raw, total) == expected
    assert_safe(clean_line(raw, total))


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_always_safe(seed: int) -> None:
    rng = random.Random(seed)
    raw = bytes(rng.randrange(256) for _ in range(4000))
    for cut in (0, 1, 7, 100, 4000):
        assert_safe(clean_line(raw[:cut], len(raw)))


@pytest.mark.parametrize("seed", range(4))
def test_valid_utf8_cut_anywhere_gives_at_most_one_replacement(seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice("aé日🙂 ") for _ in range(200))
    raw = text.encode()
    for cut in range(len(raw) + 1):
        out = clean_line(raw[:cut], len(raw))
        kept = out.split("…[line cut:")[0]
        assert kept.count("\ufffd") <= 1
        assert kept.rstrip("\ufffd") == raw[:cut].decode("utf-8", "ignore")
        if cut < len(raw):
            assert out.endswith(f"…[line cut: {len(raw) - cut} more bytes]")


# --- LineSplitter ------------------------------------------------------------


def split_all(chunks: list[bytes], keep: int) -> list[tuple[bytes, int]]:
    splitter = LineSplitter(keep)
    out: list[tuple[bytes, int]] = []
    for chunk in chunks:
        out += list(splitter.feed(chunk))
    out += list(splitter.finish())
    return out


@pytest.mark.parametrize(
    ("chunks", "keep", "expected"),
    [
        ([b"a\nb\n"], 10, [(b"a", 1), (b"b", 1)]),
        ([b"ab", b"c\nd", b"ef\n"], 10, [(b"abc", 3), (b"def", 3)]),
        ([b"abc", b"\n"], 10, [(b"abc", 3)]),
        ([b"abc\n", b""], 10, [(b"abc", 3)]),
        ([b"", b"", b"x\n"], 10, [(b"x", 1)]),
        ([b"\n\n"], 10, [(b"", 0), (b"", 0)]),
        ([b"last line"], 10, [(b"last line", 9)]),
        ([b"one\nlast"], 10, [(b"one", 3), (b"last", 4)]),
        ([b""], 10, []),
        ([], 10, []),
        ([b"crlf\r\n", b"two\r\n"], 10, [(b"crlf\r", 5), (b"two\r", 4)]),
        ([b"bare\rcr\n"], 10, [(b"bare\rcr", 7)]),
        ([b"0123456789abcdef\n"], 4, [(b"0123", 16)]),
        ([b"0123", b"4567", b"89\nxy\n"], 3, [(b"012", 10), (b"xy", 2)]),
        ([b"0123456789"], 4, [(b"0123", 10)]),
        ([b"abcd\nefgh\n"], 4, [(b"abcd", 4), (b"efgh", 4)]),
    ],
)
def test_line_splitter(chunks: list[bytes], keep: int, expected: list[tuple[bytes, int]]) -> None:
    assert split_all(chunks, keep) == expected


def test_crlf_line_is_escaped_after_split() -> None:
    ((raw, total),) = split_all([b"user=root\r\n"], 100)
    assert clean_line(raw, total) == "user=root\\x0d"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 10_000])
def test_splitter_independent_of_chunking(chunk_size: int) -> None:
    rng = random.Random(chunk_size)
    lines = [bytes(rng.randrange(256) for _ in range(rng.randrange(60))).replace(b"\n", b"") for _ in range(100)]
    data = b"\n".join(lines) + b"\ntail without newline"
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    got = split_all(chunks, 16)
    lines.append(b"tail without newline")
    assert got == [(line[:16], len(line)) for line in lines]


def test_huge_line_memory_is_bounded() -> None:
    splitter = LineSplitter(8)
    for _ in range(1000):
        assert list(splitter.feed(b"x" * 1000)) == []
    assert len(splitter._current) == 8
    assert list(splitter.feed(b"y\nz\n")) == [(b"x" * 8, 1_000_001), (b"z", 1)]
    assert list(splitter.finish()) == []


def test_finish_yields_the_last_line_once() -> None:
    splitter = LineSplitter(10)
    assert list(splitter.feed(b"abc")) == []
    assert list(splitter.finish()) == [(b"abc", 3)]
    assert list(splitter.finish()) == []


@pytest.mark.parametrize("code", [0x00AD, 0x200B, 0x200C, 0x200D, 0x2060, 0x2064, 0xE0041, 0xE007F, 0xFFF9])
def test_invisible_characters_are_escaped(code: int) -> None:
    out = clean_text(f"a{chr(code)}b".encode())
    assert out == f"a\\u{code:04x}b"
