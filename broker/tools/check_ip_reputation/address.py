"""Validation of the `ip_address` argument of check_ip_reputation.

The value comes from an AI client and is untrusted, so it is checked here,
in the broker, before any worker starts. Two things are enforced:

* only one unambiguous textual form per address is accepted for IPv4 (no
  octal, hex, bare-integer or shortened forms, which different resolvers and
  APIs read differently), and any RFC 4291 text form for IPv6;
* addresses that are not public hosts (internal, loopback, documentation,
  multicast, ...) are refused, so internal addresses never leave the host
  in a reputation query. The ranges are listed in explicit tables below
  rather than taken from `ipaddress`'s `is_private`/`is_global`, whose
  meaning has changed between Python versions.

Messages are safe to show the client: they never echo more than
MAX_ECHO characters of the input, and show it with `repr` so control
characters come out escaped.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_LENGTH = 45  # longest IPv6 text: ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255
MAX_ECHO = 64


class AddressRefused(Exception):
    """The address is refused; `message` is a short reason safe to show the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CheckedAddress:
    canonical: str  # ipaddress's compressed form (IPv6 lowercase, compressed)
    version: int  # 4 or 6
    value: int  # int(ipaddress.ip_address(canonical))


@dataclass(frozen=True)
class Refused:
    network: Network
    category: str
    reason: str


def _rows(rows: list[tuple[str, str, str]]) -> tuple[Refused, ...]:
    # strict=True: a typo with host bits set in this table must fail at import.
    return tuple(Refused(ipaddress.ip_network(net, strict=True), cat, why) for net, cat, why in rows)


_INTERNAL = "internal addresses are not looked up"
_SEND_V4 = "send the IPv4 address itself"

# When several rows match, the most specific one (longest prefix) is reported,
# so the order of rows does not matter.
REFUSED_V4 = _rows(
    [
        ("0.0.0.0/32", "unspecified", "not a host address"),
        ("0.0.0.0/8", "'this network'", "not a valid destination address"),
        ("10.0.0.0/8", "private", _INTERNAL),
        ("100.64.0.0/10", "carrier-grade NAT", "shared provider-internal space, not a public address"),
        ("127.0.0.0/8", "loopback", "refers to the local host"),
        ("169.254.0.0/16", "link-local", "valid only on a local link"),
        ("172.16.0.0/12", "private", _INTERNAL),
        ("192.0.0.0/24", "IETF protocol assignments", "reserved for protocol use"),
        ("192.0.2.0/24", "documentation", "reserved for examples, not used on the Internet"),
        ("192.168.0.0/16", "private", _INTERNAL),
        ("198.18.0.0/15", "benchmarking", "reserved for network benchmarks"),
        ("198.51.100.0/24", "documentation", "reserved for examples, not used on the Internet"),
        ("203.0.113.0/24", "documentation", "reserved for examples, not used on the Internet"),
        ("224.0.0.0/4", "multicast", "a group address, not a host"),
        ("240.0.0.0/4", "reserved", "reserved for future use"),
        ("255.255.255.255/32", "limited broadcast", "not a host address"),
    ]
)

REFUSED_V6 = _rows(
    [
        ("::/128", "unspecified", "not a host address"),
        ("::1/128", "loopback", "refers to the local host"),
        ("::/96", "IPv4-compatible", "deprecated form; " + _SEND_V4),
        ("::ffff:0:0/96", "IPv4-mapped", _SEND_V4),
        # Not in the original brief: SIIT's IPv4-translated form (RFC 2765) also
        # wraps an IPv4 address and is never a public host.
        ("::ffff:0:0:0/96", "IPv4-translated", "deprecated form; " + _SEND_V4),
        ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation", "translates to network-local addresses"),
        ("100::/64", "discard-only", "a black-hole prefix, not a host"),
        ("2001:2::/48", "benchmarking", "reserved for network benchmarks"),
        ("2001:20::/28", "ORCHIDv2", "cryptographic identifiers, not routable addresses"),
        ("2001:db8::/32", "documentation", "reserved for examples, not used on the Internet"),
        ("3fff::/20", "documentation", "reserved for examples, not used on the Internet"),
        ("fc00::/7", "private (unique-local)", _INTERNAL),
        ("fe80::/10", "link-local", "valid only on a local link"),
        ("fec0::/10", "site-local (deprecated)", _INTERNAL),
        ("ff00::/8", "multicast", "a group address, not a host"),
    ]
)


def _sixtofour(value: int) -> int:
    return (value >> 80) & 0xFFFFFFFF  # bits 16..47: 2002:AABB:CCDD::/48


def _teredo_client(value: int) -> int:
    return (value & 0xFFFFFFFF) ^ 0xFFFFFFFF  # the client address is stored inverted


def _nat64(value: int) -> int:
    return value & 0xFFFFFFFF  # RFC 6052 /96: the IPv4 address is the last 32 bits


# Prefixes that carry an IPv4 address: the IPv6 address is as public as the
# IPv4 address it embeds, so that IPv4 address is checked instead.
EMBEDDING_V4: tuple[tuple[ipaddress.IPv6Network, str, Callable[[int], int]], ...] = (
    (ipaddress.IPv6Network("2002::/16"), "6to4", _sixtofour),
    (ipaddress.IPv6Network("2001::/32"), "Teredo", _teredo_client),
    (ipaddress.IPv6Network("64:ff9b::/96"), "NAT64", _nat64),
)

_CIDR = re.compile(r"[^/]+/[0-9]{1,3}")
_WITH_PORT = re.compile(r"[0-9]+(\.[0-9]+){3}:[0-9]+")
_IPV4_PART = re.compile(r"[0-9]+")
_POLICY_CIDR = re.compile(r"[0-9A-Fa-f:.]+/(0|[1-9][0-9]{0,2})")


def show(value: str) -> str:
    """The input as it may appear in a message: at most MAX_ECHO characters, escaped."""
    if len(value) <= MAX_ECHO:
        return repr(value)
    return f"{value[:MAX_ECHO]!r}… ({len(value)} characters)"


def check_address(value: object, extra_refused: Sequence[Network] = ()) -> CheckedAddress:
    """Return the canonical form of one public IP address, or raise AddressRefused."""
    text = _check_text(value)
    address = _parse(text)
    _check_category(address)
    _check_policy(address, extra_refused)
    return CheckedAddress(canonical=address.compressed, version=address.version, value=int(address))


# --- text ------------------------------------------------------------------


def _check_text(value: object) -> str:
    # Exact str only: JSON gives plain str, and a subclass could override the
    # methods relied on below.
    if type(value) is not str:
        raise AddressRefused(f"ip_address must be a string, not {type(value).__name__}")
    if not value:
        raise AddressRefused("ip_address is empty")
    if len(value) > MAX_LENGTH:
        raise AddressRefused(
            f"too long: {len(value)} characters, an IP address has at most {MAX_LENGTH}: {show(value)}"
        )
    _check_characters(value)
    return value


def _check_characters(value: str) -> None:
    if "\x00" in value:
        raise AddressRefused(f"contains a NUL character: {show(value)}")
    if not value.isascii():
        # Named explicitly: full-width or other Unicode digits look like an address.
        first = next(c for c in value if not c.isascii())
        raise AddressRefused(f"contains non-ASCII character U+{ord(first):04X}; only ASCII is accepted: {show(value)}")
    if value != value.strip():
        raise AddressRefused(f"surrounding whitespace is not accepted: {show(value)}")
    if any(c.isspace() for c in value):
        raise AddressRefused(f"contains whitespace: {show(value)}")
    if not value.isprintable():
        raise AddressRefused(f"contains control characters: {show(value)}")


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    _refuse_decorations(text)
    if ":" in text:
        return _parse_ipv6(text)
    return _parse_ipv4(text)


def _refuse_decorations(text: str) -> None:
    # Common near-misses get their own message, so the client can fix the call.
    if _CIDR.fullmatch(text):
        raise AddressRefused(f"a single address, not a network (CIDR): {show(text)}")
    if "%" in text:
        raise AddressRefused(f"zone ids ('%...') are not accepted; send the address alone: {show(text)}")
    if "[" in text or "]" in text:
        raise AddressRefused(f"brackets are not accepted; send the address alone: {show(text)}")
    if _WITH_PORT.fullmatch(text):
        raise AddressRefused(f"a port is not accepted; send the address alone: {show(text)}")


def _parse_ipv4(text: str) -> ipaddress.IPv4Address:
    _check_ipv4_syntax(text)
    _check_ipv4_parts(text.split("."), text)
    address = ipaddress.IPv4Address(text)
    # The checks above should leave exactly one spelling; make sure of it.
    if address.compressed != text:
        raise AddressRefused(f"not a canonical IPv4 address: {show(text)}")
    return address


def _check_ipv4_syntax(text: str) -> None:
    # Forms inet_aton() accepts but that mean different things to different parsers.
    if re.search(r"(^|\.)0[xX]", text):
        raise AddressRefused(f"not a canonical IPv4 address: hexadecimal parts are not accepted: {show(text)}")
    if re.search(r"[A-Za-z]", text):
        raise AddressRefused(f"not an IP address (host names are not accepted): {show(text)}")
    bad = re.search(r"[^0-9.]", text)
    if bad:
        raise AddressRefused(f"unexpected character {bad.group()!r} in an IPv4 address: {show(text)}")
    if text.endswith("."):
        raise AddressRefused(f"not a canonical IPv4 address: trailing dot: {show(text)}")
    if "." not in text:
        raise AddressRefused(
            f"not a canonical IPv4 address: a bare integer is ambiguous; use the dotted quad: {show(text)}"
        )


def _check_ipv4_parts(parts: list[str], text: str) -> None:
    if "" in parts:
        raise AddressRefused(f"not a canonical IPv4 address: empty part: {show(text)}")
    if len(parts) != 4:
        raise AddressRefused(
            f"not a canonical IPv4 address: {len(parts)} parts, exactly 4 expected "
            f"(shortened forms like 127.1 are ambiguous): {show(text)}"
        )
    for part in parts:
        if not _IPV4_PART.fullmatch(part):
            raise AddressRefused(f"not a canonical IPv4 address: parts must be decimal: {show(text)}")
        if len(part) > 1 and part.startswith("0"):
            raise AddressRefused(f"not a canonical IPv4 address: leading zeros are ambiguous (octal?): {show(text)}")
        if int(part) > 255:
            raise AddressRefused(f"not a canonical IPv4 address: part {part} is out of range 0..255: {show(text)}")


def _parse_ipv6(text: str) -> ipaddress.IPv6Address:
    bad = re.search(r"[^0-9A-Fa-f:.]", text)
    if bad:
        raise AddressRefused(f"unexpected character {bad.group()!r} in an IPv6 address: {show(text)}")
    try:
        return ipaddress.IPv6Address(text)
    except ValueError as exc:
        raise AddressRefused(f"not a valid IPv6 address ({_hint(exc)}): {show(text)}") from None


def _hint(exc: ValueError) -> str:
    # ipaddress's messages repeat the input (sometimes twice, nested); keep only
    # the explanation before the first " in '...'" (the input has no spaces).
    return str(exc).split(" in ", 1)[0][:80]


# --- categories ------------------------------------------------------------


def _match(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Refused | None:
    table = REFUSED_V4 if address.version == 4 else REFUSED_V6
    matches = [row for row in table if address in row.network]
    return max(matches, key=lambda row: row.network.prefixlen, default=None)


def _describe(row: Refused) -> str:
    return f"{row.category} address ({row.network}) — {row.reason}"


def _check_category(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    row = _match(address)
    if row is not None:
        raise AddressRefused(_describe(row))
    embedded = _embedded_v4(address)
    if embedded is not None:
        kind, inner = embedded
        row = _match(inner)
        if row is not None:
            raise AddressRefused(f"{kind} address embedding IPv4 address {inner}: {_describe(row)}")


def _embedded_v4(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    for network, kind, extract in EMBEDDING_V4:
        if address in network:
            return kind, ipaddress.IPv4Address(extract(int(address)))
    return None


def _check_policy(address: ipaddress.IPv4Address | ipaddress.IPv6Address, extra: Sequence[Network]) -> None:
    excluded = _policy_match(address, extra)
    if excluded is not None:
        raise AddressRefused(f"in a range the policy excludes ({excluded})")
    # The organisation's IPv4 ranges must not leak through an IPv6 wrapper either.
    embedded = _embedded_v4(address)
    if embedded is not None:
        kind, inner = embedded
        excluded = _policy_match(inner, extra)
        if excluded is not None:
            raise AddressRefused(
                f"{kind} address embedding IPv4 address {inner}: in a range the policy excludes ({excluded})"
            )


def _policy_match(address: ipaddress.IPv4Address | ipaddress.IPv6Address, extra: Sequence[Network]) -> Network | None:
    for network in extra:
        if network.version == address.version and address in network:
            return network
    return None


# --- policy ----------------------------------------------------------------


def parse_networks(values: list[str], key: str) -> list[Network]:
    """Parse the policy's extra refused ranges; raise ValueError naming `key[i]`."""
    if not isinstance(values, list):
        raise ValueError(f"{key} must be a list of CIDR strings, not {type(values).__name__}")
    return [_parse_network(value, f"{key}[{index}]") for index, value in enumerate(values)]


def _parse_network(value: object, where: str) -> Network:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a CIDR string such as 192.0.2.0/24, not {type(value).__name__}")
    # Only address/prefix-length: ipaddress would also take netmasks, host masks,
    # bare addresses and zone ids, which are easy to get wrong in a policy.
    if not _POLICY_CIDR.fullmatch(value):
        raise ValueError(f"{where} is not a CIDR network (address/prefix length): {show(value)}")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(_network_error(value, where)) from None


def _network_error(value: str, where: str) -> str:
    # ipaddress's own message is not reused: it can repeat the whole value.
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"{where} is not a valid CIDR network: {show(value)}"
    return f"{where} has host bits set: {show(value)} (did you mean {loose}?)"
