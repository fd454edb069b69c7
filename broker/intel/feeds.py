"""Parsers for threat-intel feed files: FireHOL/Spamhaus netsets, abuse.ch CSV, Tor exit lists.

Each parser turns a feed's bytes into deduplicated (version, first address,
prefix length) networks in file order. A line that cannot be read is counted
and a few are quoted back to the operator; it never stops the compile, since
one bad line in a downloaded list should not cost the other million.

Addresses are accepted only in forms `ipaddress.ip_network(strict=True)`
accepts; a network with host bits set is malformed (masking it silently
would list addresses the feed did not name). Plain dotted-quad IPv4 takes a
regex fast path, because `ipaddress` objects cost microseconds per line.
"""

from __future__ import annotations

import csv
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Literal

FeedFormat = Literal["netset", "csv", "tor_exits"]
FORMATS: tuple[FeedFormat, ...] = ("netset", "csv", "tor_exits")

MAX_FEED_BYTES = 512 << 20
MAX_EXAMPLES = 5
MAX_EXAMPLE_CHARS = 60
MAX_TOKEN = 64  # longer than any address or network text
BOM = "\ufeff"
TOR_IGNORED = frozenset({"ExitNode", "Published", "LastStatus"})
NOT_ADDRESS = "not an IP address or network"
NOT_UTF8 = "not valid UTF-8"

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_QUAD = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
_PREFIX = r"(?:/(3[0-2]|[12]?[0-9]))?"
# A whole netset line in the common form: canonical quad, optional /len,
# optional ASCII comment. Anything else takes the slow path.
_NETSET_FAST = re.compile(rf"[ \t]*({_QUAD}){_PREFIX}[ \t\r]*(?:[#;][\x00-\x7f]*)?")
_V4_TOKEN = re.compile(rf"({_QUAD}){_PREFIX}")
_HOST4 = [(1 << (32 - plen)) - 1 for plen in range(33)]

Network = tuple[int, int, int]  # (version, first address, prefix length)


@dataclass
class ParsedFeed:
    networks: list[Network] = field(default_factory=list)  # deduplicated, in file order
    lines: int = 0  # data lines seen (not comments, blank lines or a CSV header)
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)


class _Collector:
    """Accumulates one feed's networks (deduplicated, ordered) and its complaints."""

    def __init__(self) -> None:
        self.networks: dict[Network, None] = {}  # a dict keeps first-seen order
        self.lines = 0
        self.malformed = 0
        self.examples: list[str] = []

    def bad(self, number: int, reason: str, value: str | bytes) -> None:
        self.malformed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"line {number}: {reason}: {value[:MAX_EXAMPLE_CHARS]!r}")

    def token(self, number: int, token: str, allow_prefix: bool = True) -> None:
        """Count a data line holding `token` and record its network or the reason it has none."""
        self.lines += 1
        try:
            self.networks[parse_network(token, allow_prefix)] = None
        except ValueError as exc:
            self.bad(number, str(exc), token)

    def undecodable(self, number: int, line: str) -> None:
        self.lines += 1
        self.bad(number, NOT_UTF8, line.encode("utf-8", "surrogateescape"))

    def result(self) -> ParsedFeed:
        return ParsedFeed(list(self.networks), self.lines, self.malformed, self.examples)


def parse_feed(data: bytes, fmt: FeedFormat, column: int = 1, header: bool = True, delimiter: str = ",") -> ParsedFeed:
    """Parse one feed file's bytes. Raises ValueError for a bad format/option or a feed over MAX_FEED_BYTES."""
    if len(data) > MAX_FEED_BYTES:
        raise ValueError(f"feed is {len(data)} bytes, more than the {MAX_FEED_BYTES >> 20} MiB limit")
    lines = _lines(data)
    if fmt == "netset":
        return _parse_netset(lines)
    if fmt == "csv":
        if column < 1 or len(delimiter) != 1:
            raise ValueError("csv feeds need column >= 1 and a one-character delimiter")
        return _parse_csv(lines, column, header, delimiter)
    if fmt == "tor_exits":
        return _parse_tor(lines)
    raise ValueError(f"unknown feed format {fmt!r} (expected one of {', '.join(FORMATS)})")


def _lines(data: bytes) -> list[str]:
    # surrogateescape keeps undecodable bytes visible per line (as lone
    # surrogates) instead of failing the whole file.
    text = data.decode("utf-8", "surrogateescape")
    if text.startswith(BOM):
        text = text[1:]
    return text.split("\n")


def _is_utf8(line: str) -> bool:
    if line.isascii():
        return True
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: an undecodable byte
        return False
    return True


def parse_network(token: str, allow_prefix: bool = True) -> Network:
    """(version, first address, prefix length) of an address or CIDR; ValueError(reason) if it is not one."""
    fast = _V4_TOKEN.fullmatch(token)
    if fast is not None:
        address, bits = fast.groups()
        if bits is not None and not allow_prefix:
            raise ValueError("a network where an address was expected")
        value = int.from_bytes(socket.inet_aton(address), "big")
        plen = 32 if bits is None else int(bits)
        if value & _HOST4[plen]:
            raise ValueError("host bits set")
        return 4, value, plen
    return _parse_slow(token, allow_prefix)


def _parse_slow(token: str, allow_prefix: bool) -> Network:
    if len(token) > MAX_TOKEN or "%" in token:  # "%": IPv6 zone ids name no global address
        raise ValueError(NOT_ADDRESS)
    if "/" in token and not allow_prefix:
        raise ValueError("a network where an address was expected")
    try:
        network = ipaddress.ip_network(token, strict=True)
    except ValueError:
        try:
            ipaddress.ip_network(token, strict=False)
        except ValueError:
            raise ValueError(NOT_ADDRESS) from None
        raise ValueError("host bits set") from None
    return network.version, int(network.network_address), network.prefixlen


# --- netset -----------------------------------------------------------------


def _parse_netset(lines: list[str]) -> ParsedFeed:
    out = _Collector()
    networks, fast, aton, host = out.networks, _NETSET_FAST.fullmatch, socket.inet_aton, _HOST4
    fast_lines = 0
    for number, line in enumerate(lines, 1):
        match = fast(line)
        if match is None:
            _netset_slow(out, number, line)
            continue
        # Hot path, inlined: most lines of a large netset are a plain quad or CIDR.
        fast_lines += 1
        address, bits = match.groups()
        value = int.from_bytes(aton(address), "big")
        plen = 32 if bits is None else int(bits)
        if value & host[plen]:
            out.bad(number, "host bits set", f"{address}/{bits}")
        else:
            networks[(4, value, plen)] = None
    out.lines += fast_lines
    return out.result()


def _netset_slow(out: _Collector, number: int, line: str) -> None:
    if not _is_utf8(line):
        out.undecodable(number, line)
        return
    token = _strip_comment(line).strip()
    if token:
        out.token(number, token)


def _strip_comment(line: str) -> str:
    cut = len(line)
    for mark in "#;":
        at = line.find(mark)
        if 0 <= at < cut:
            cut = at
    return line[:cut]


# --- csv --------------------------------------------------------------------


def _parse_csv(lines: list[str], column: int, header: bool, delimiter: str) -> ParsedFeed:
    out = _Collector()
    skip_header = header
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if skip_header:
            skip_header = False
            continue
        if not _is_utf8(line):
            out.undecodable(number, line)
            continue
        _csv_row(out, number, line, column, delimiter)
    return out.result()


def _csv_row(out: _Collector, number: int, line: str, column: int, delimiter: str) -> None:
    try:
        row = next(csv.reader((line,), delimiter=delimiter, strict=True), [])
    except csv.Error:
        out.lines += 1
        out.bad(number, "CSV syntax error", line)
        return
    if len(row) < column:
        out.lines += 1
        out.bad(number, f"too few columns ({len(row)} < {column})", line)
        return
    out.token(number, row[column - 1].strip())


# --- tor exits --------------------------------------------------------------


def _parse_tor(lines: list[str]) -> ParsedFeed:
    """The bulk exit list (one address a line) or exit-addresses (ExitNode/ExitAddress blocks)."""
    out = _Collector()
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        if not _is_utf8(line):
            out.undecodable(number, line)
        elif words[0] in TOR_IGNORED:
            continue
        elif words[0] == "ExitAddress" and len(words) >= 2:
            out.token(number, words[1], allow_prefix=False)
        elif len(words) == 1 and words[0] != "ExitAddress":
            out.token(number, words[0], allow_prefix=False)
        else:
            out.lines += 1
            out.bad(number, "not an exit-list line", line.strip())
    return out.result()
