"""A strict parser for the POSIX extended regular expressions query_logs accepts.

The broker parses every pattern before any worker starts. The accepted
language is a conservative subset of GNU `grep -E` in the C locale: anything
whose meaning differs between engines, or that GNU silently reinterprets (a
stray `{`, a leading `*`, `\\d`), is refused with a hint instead of being
guessed at. Size, repetition and nesting are bounded so a pattern cannot make
the engine build an enormous automaton. The result is a small AST, so the same
validated pattern can later be rendered for another engine.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PATTERN_BYTES = 1024
MAX_REPEAT = 255
MAX_NESTING = 32
MAX_EXPANDED_SIZE = 10_000

POSIX_CLASSES = frozenset(
    {"alpha", "digit", "alnum", "upper", "lower", "space", "blank", "punct", "print", "graph", "cntrl", "xdigit"}
)
SPECIALS = frozenset(".[]()*+?{}|^$\\")
WORD_ESCAPES = frozenset("wWsSbB")
ANCHOR_ESCAPES = frozenset("bB")
QUANTIFIERS = frozenset("*+?{")
ANCHOR_INSIDE = {
    "^": "'^' anchors only at the start of the pattern or of a branch: after other items it holds only where "
    "they all match empty text (as in a*(^b)), which is rarely what was meant; for a literal write \\^",
    "$": "'$' anchors only at the end of the pattern or of a branch: before other items it holds only where "
    "they all match empty text (as in (a$)b*), which is rarely what was meant; for a literal write \\$",
}


class PatternError(ValueError):
    """The pattern is not in the accepted ERE language; the message says why."""


# --- AST ---------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    char: str


@dataclass(frozen=True)
class AnyChar:
    pass


@dataclass(frozen=True)
class Anchor:
    kind: str  # "^" or "$"


@dataclass(frozen=True)
class Escape:
    letter: str  # one of WORD_ESCAPES: \w \W \s \S (classes), \b \B (assertions)


@dataclass(frozen=True)
class Bracket:
    negated: bool
    chars: tuple[str, ...]
    ranges: tuple[tuple[str, str], ...]
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    body: Node


@dataclass(frozen=True)
class Repeat:
    body: Node
    low: int
    high: int | None  # None: unbounded


@dataclass(frozen=True)
class Concat:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alternation:
    branches: tuple[Node, ...]


Node = Literal | AnyChar | Anchor | Escape | Bracket | Group | Repeat | Concat | Alternation


# --- checks on the raw text ----------------------------------------------------


def _check_text(pattern: str) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise PatternError("must be a non-empty string")
    try:
        size = len(pattern.encode("utf-8"))
    except UnicodeEncodeError:
        raise PatternError("contains characters that are not valid Unicode") from None
    if size > MAX_PATTERN_BYTES:
        raise PatternError(f"longer than {MAX_PATTERN_BYTES} bytes")
    for char in pattern:
        code = ord(char)
        if code == 0x0A or code == 0x0D:
            raise PatternError("contains a line break; lines are matched one at a time")
        if (code < 0x20 and char != "\t") or 0x7F <= code <= 0x9F:
            raise PatternError(f"contains control character U+{code:04X}")


# --- the parser ----------------------------------------------------------------


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0
        self.depth = 0

    def fail(self, message: str) -> PatternError:
        return PatternError(f"{message} (at offset {self.pos})")

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def take(self) -> str:
        char = self.text[self.pos]
        self.pos += 1
        return char

    def parse(self) -> Node:
        node = self.alternation()
        if self.pos < len(self.text):  # only an unmatched ')' stops the top level early
            raise self.fail("unmatched ')'")
        return node

    def alternation(self) -> Node:
        branches = [self.concat()]
        while self.peek() == "|":
            self.take()
            branches.append(self.concat())
        return branches[0] if len(branches) == 1 else Alternation(tuple(branches))

    def concat(self) -> Node:
        items: list[Node] = []
        while self.peek() not in (None, "|", ")"):
            start = self.pos
            atom = self.atom()
            # An anchor that something precedes (or follows) holds only where all of
            # that matches empty text (a*(^b) is ^b): rarely what was meant, and
            # the engines once disagreed on such patterns next to \b. Refused.
            if items and _anchored(atom, "^", first=True):
                self.pos = start
                raise self.fail(ANCHOR_INSIDE["^"])
            if items and _anchored(items[-1], "$", first=False):
                self.pos = start
                raise self.fail(ANCHOR_INSIDE["$"])
            items.append(self.quantified(atom))
        return items[0] if len(items) == 1 else Concat(tuple(items))

    def quantified(self, atom: Node) -> Node:
        if self.peek() not in QUANTIFIERS:
            return atom
        if (
            isinstance(atom, Anchor)
            or (isinstance(atom, Escape) and atom.letter in ANCHOR_ESCAPES)
            or _anchored(atom, "^", first=True)
            or _anchored(atom, "$", first=False)
        ):
            raise self.fail("an anchor cannot be repeated")
        if isinstance(atom, Literal) and ord(atom.char) > 0x7F:
            raise self.fail(
                f"repeating the non-ASCII character {atom.char!r} would repeat only its last byte; "
                f"use a group, e.g. ({atom.char})*"
            )
        low, high = self.quantifier()
        if self.peek() in QUANTIFIERS:
            raise self.fail("a repetition cannot follow another repetition; use a group, e.g. (a+)*")
        return Repeat(atom, low, high)

    def quantifier(self) -> tuple[int, int | None]:
        char = self.take()
        if char == "*":
            return 0, None
        if char == "+":
            return 1, None
        if char == "?":
            return 0, 1
        return self.interval()

    def interval(self) -> tuple[int, int | None]:
        start = self.pos - 1
        close = self.text.find("}", self.pos)
        body = self.text[self.pos : close] if close != -1 else ""
        low_text, comma, high_text = body.partition(",")
        if close == -1 or not low_text.isdigit() or not (high_text == "" or high_text.isdigit()):
            self.pos = start
            if low_text == "" and comma and high_text.isdigit() and close != -1:
                raise self.fail("write {0,n} rather than {,n}")
            raise self.fail("'{' must start a repetition like {2}, {2,} or {2,5}; for a literal brace write \\{ or [{]")
        low = int(low_text)
        high = None if (comma and high_text == "") else int(high_text or low_text)
        if max(low, high or 0) > MAX_REPEAT:
            self.pos = start
            raise self.fail(f"repetition counts are limited to {MAX_REPEAT}")
        if high is not None and high < low:
            self.pos = start
            raise self.fail(f"repetition {{{body}}} has its bounds reversed")
        self.pos = close + 1
        return low, high

    def atom(self) -> Node:
        if (ahead := self.peek()) in QUANTIFIERS:
            raise self.fail(f"'{ahead}' has nothing to repeat; for a literal write \\{ahead}")
        char = self.take()  # concat() calls this only before the end of the pattern
        if char == "(":
            return self.group()
        if char == "[":
            return self.bracket()
        if char == "\\":
            return self.escape()
        if char == ".":
            return AnyChar()
        if char in "^$":
            return Anchor(char)
        return Literal(char)

    def group(self) -> Node:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.fail(f"groups nested deeper than {MAX_NESTING}")
        body = self.alternation()
        if self.peek() != ")":
            raise self.fail("unmatched '('")
        self.take()
        self.depth -= 1
        return Group(body)

    def escape(self) -> Node:
        char = self.peek()
        if char is None:
            raise self.fail("trailing backslash")
        self.take()
        if char in SPECIALS:
            return Literal(char)
        if char in WORD_ESCAPES:
            return Escape(char)
        if char in "123456789":
            raise self.fail("backreferences (\\1 to \\9) are not supported")
        if char in "dD":
            hint = "[0-9]" if char == "d" else "[^0-9]"
            raise self.fail(f"\\{char} is not an ERE escape; use {hint}")
        if char in "<>`'":
            raise self.fail(f"\\{char} is not supported; use \\b for a word boundary")
        if char in "nrtfv":
            raise self.fail(
                f"\\{char} is not an escape in ERE; lines never contain a newline, "
                "and a tab can be typed as is or matched with [[:blank:]]"
            )
        raise self.fail(f"'\\{char}' is not an escape in ERE; write {char!r} without the backslash")

    def bracket(self) -> Node:
        negated = self.peek() == "^"
        if negated:
            self.take()
        chars: list[str] = []
        ranges: list[tuple[str, str]] = []
        classes: list[str] = []
        first = True
        after_range = after_class = False
        while True:
            char = self.peek()
            if char is None:
                raise self.fail("unmatched '['")
            if char == "]" and not first:
                self.take()
                break
            if char == "[" and self.text.startswith(("[:", "[=", "[."), self.pos):
                classes.append(self.bracket_class())
                first, after_range, after_class = False, False, True
                continue
            self.take()
            if ord(char) > 0x7F:
                raise self.fail(
                    f"non-ASCII character {char!r} in a bracket expression matches single bytes; "
                    "use alternation instead, e.g. (é|è)"
                )
            following = self.text[self.pos : self.pos + 2]
            if char == "-" and not first and following[:1] != "]" and after_range:
                raise self.fail("ambiguous '-' after a range; put a literal '-' first or last in the brackets")
            if char == "-" and following[:1] != "]" and after_class:
                # POSIX leaves it undefined (a class cannot end a range) and GNU grep refuses it.
                raise self.fail(
                    "ambiguous '-' after a character class; put a literal '-' first or last in the brackets"
                )
            if following[:1] == "-" and following[1:2] not in ("]", ""):
                end = self.range_end()
                if ord(end) < ord(char):
                    raise self.fail(f"range {char}-{end} is reversed")
                ranges.append((char, end))
                after_range = True
            else:
                chars.append(char)
                after_range = False
            first, after_class = False, False
        if len(classes) == 0 and chars and chars[0] == ":" and chars[-1] == ":" and len(chars) > 1:
            raise self.fail("a character class is written [[:name:]], not [:name:]")
        return Bracket(negated, tuple(chars), tuple(ranges), tuple(classes))

    def range_end(self) -> str:
        self.take()  # the '-'
        if self.text.startswith(("[:", "[=", "[."), self.pos):
            raise self.fail("a range cannot end in a character class")
        end = self.take()
        if ord(end) > 0x7F:
            raise self.fail("ranges must be between ASCII characters")
        return end

    def bracket_class(self) -> str:
        kind = self.text[self.pos + 1]
        close = self.text.find(kind + "]", self.pos + 2)
        if kind != ":":
            raise self.fail("equivalence classes [= =] and collating symbols [. .] are not supported")
        if close == -1:
            raise self.fail("unterminated character class; write [[:name:]]")
        name = self.text[self.pos + 2 : close]
        if name not in POSIX_CLASSES:
            raise self.fail(f"unknown character class [:{name[:20]}:]; known: {', '.join(sorted(POSIX_CLASSES))}")
        self.pos = close + 2
        return name


def _anchored(node: Node, kind: str, first: bool) -> bool:
    """Whether `node` can begin (first) or end (not first) with the anchor `kind`."""
    if isinstance(node, Anchor):
        return node.kind == kind
    if isinstance(node, (Group, Repeat)):
        return _anchored(node.body, kind, first)
    if isinstance(node, Concat):
        return bool(node.items) and _anchored(node.items[0] if first else node.items[-1], kind, first)
    if isinstance(node, Alternation):
        return any(_anchored(branch, kind, first) for branch in node.branches)
    return False


# --- size of the automaton an engine would build --------------------------------


def expanded_size(node: Node) -> int:
    """Atoms after expanding bounded repetitions: a proxy for automaton size."""
    if isinstance(node, (Concat, Alternation)):
        parts = node.items if isinstance(node, Concat) else node.branches
        return sum(expanded_size(part) for part in parts) + 1
    if isinstance(node, Group):
        return expanded_size(node.body)
    if isinstance(node, Repeat):
        copies = node.high if node.high is not None else node.low + 1
        return expanded_size(node.body) * max(copies, 1)
    return 1


def parse_ere(pattern: str) -> Node:
    """Parse a pattern into its AST, or raise PatternError saying what is wrong."""
    _check_text(pattern)
    node = _Parser(pattern).parse()
    if expanded_size(node) > MAX_EXPANDED_SIZE:
        raise PatternError("too complex once repetitions are expanded; use smaller counts or fewer nested repetitions")
    return node
