"""check_ip_reputation's address validation: canonical forms, refused ranges, policy ranges, safe messages."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from broker.tools.check_ip_reputation.address import (
    REFUSED_V4,
    REFUSED_V6,
    AddressRefused,
    CheckedAddress,
    Refused,
    check_address,
    parse_networks,
)

# (input, canonical, version)
ACCEPTED = [
    ("8.8.8.8", "8.8.8.8", 4),
    ("45.155.205.233", "45.155.205.233", 4),
    ("1.1.1.1", "1.1.1.1", 4),
    ("1.0.0.1", "1.0.0.1", 4),  # a part that is just "0" is canonical
    ("1.0.0.0", "1.0.0.0", 4),  # just after 0.0.0.0/8
    ("223.255.255.255", "223.255.255.255", 4),  # just before 224.0.0.0/4
    ("9.255.255.255", "9.255.255.255", 4),
    ("11.0.0.0", "11.0.0.0", 4),
    ("100.63.255.255", "100.63.255.255", 4),  # around 100.64.0.0/10
    ("100.128.0.0", "100.128.0.0", 4),
    ("126.255.255.255", "126.255.255.255", 4),  # around 127.0.0.0/8
    ("128.0.0.0", "128.0.0.0", 4),
    ("169.253.255.255", "169.253.255.255", 4),  # around 169.254.0.0/16
    ("169.255.0.0", "169.255.0.0", 4),
    ("172.15.255.255", "172.15.255.255", 4),  # around 172.16.0.0/12
    ("172.32.0.0", "172.32.0.0", 4),
    ("191.255.255.255", "191.255.255.255", 4),  # around 192.0.0.0/24
    ("192.0.1.0", "192.0.1.0", 4),
    ("192.0.1.255", "192.0.1.255", 4),  # around 192.0.2.0/24
    ("192.0.3.0", "192.0.3.0", 4),
    ("192.88.99.1", "192.88.99.1", 4),  # deprecated 6to4 relay anycast: deliberately allowed
    ("192.167.255.255", "192.167.255.255", 4),  # around 192.168.0.0/16
    ("192.169.0.0", "192.169.0.0", 4),
    ("198.17.255.255", "198.17.255.255", 4),  # around 198.18.0.0/15
    ("198.20.0.0", "198.20.0.0", 4),
    ("198.51.99.255", "198.51.99.255", 4),  # around 198.51.100.0/24
    ("198.51.101.0", "198.51.101.0", 4),
    ("203.0.112.255", "203.0.112.255", 4),  # around 203.0.113.0/24
    ("203.0.114.0", "203.0.114.0", 4),
    ("2a06:4880:1000::d5", "2a06:4880:1000::d5", 6),
    ("2A06:4880:1000::D5", "2a06:4880:1000::d5", 6),
    ("2a06:4880:1000:0000:0000:0000:0000:00d5", "2a06:4880:1000::d5", 6),
    ("2a06:4880:1000:0:0:0:0:d5", "2a06:4880:1000::d5", 6),
    ("2606:4700:4700::1111", "2606:4700:4700::1111", 6),
    ("2606:4700:4700:0000:0000:0000:0000:1111", "2606:4700:4700::1111", 6),
    ("2606:4700:4700:0000:0000:0000:255.255.255.255", "2606:4700:4700::ffff:ffff", 6),  # 45 characters
    ("2002:2d9b:cde9::1", "2002:2d9b:cde9::1", 6),  # 6to4 of 45.155.205.233
    ("2002:2D9B:CDE9:0:0:0:0:1", "2002:2d9b:cde9::1", 6),
    ("2001:0:4136:e378:8000:63bf:d264:3216", "2001:0:4136:e378:8000:63bf:d264:3216", 6),  # Teredo, 45.155.205.233
    ("64:ff9b::808:808", "64:ff9b::808:808", 6),  # NAT64 of 8.8.8.8
    ("64:ff9b::8.8.8.8", "64:ff9b::808:808", 6),
    ("64:ff9b::1:a01:203", "64:ff9b::1:a01:203", 6),  # outside 64:ff9b::/96: nothing embedded
    ("64:ff9b:2::", "64:ff9b:2::", 6),  # just after 64:ff9b:1::/48
    ("100:0:0:1::", "100:0:0:1::", 6),  # just after 100::/64
    ("2001:1:ffff:ffff:ffff:ffff:ffff:ffff", "2001:1:ffff:ffff:ffff:ffff:ffff:ffff", 6),  # just before 2001:2::/48
    ("2001:2:1::", "2001:2:1::", 6),  # just after 2001:2::/48
    ("2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", "2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", 6),  # before 2001:20::/28
    ("2001:30::", "2001:30::", 6),  # after 2001:20::/28
    ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", 6),  # before 2001:db8::/32
    ("2001:db9::", "2001:db9::", 6),
    ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 6),  # before 3fff::/20
    ("3fff:1000::", "3fff:1000::", 6),  # after 3fff::/20
    ("2003::1", "2003::1", 6),  # just after 2002::/16, nothing embedded
    ("2001:1::1", "2001:1::1", 6),  # just after Teredo 2001::/32
]

# (input, distinctive part of the reason)
REFUSED_SYNTAX = [
    ("010.0.0.1", "leading zeros are ambiguous"),
    ("1.2.3.04", "leading zeros are ambiguous"),
    ("00.1.2.3", "leading zeros are ambiguous"),
    ("0177.0.0.1", "(octal?)"),
    ("0x7f.0.0.1", "hexadecimal parts are not accepted"),
    ("0X7F.0.0.1", "hexadecimal parts are not accepted"),
    ("1.0x1.2.3", "hexadecimal parts are not accepted"),
    ("0x7f000001", "hexadecimal parts are not accepted"),
    ("2130706433", "a bare integer is ambiguous"),
    ("0", "a bare integer is ambiguous"),
    ("127.1", "2 parts, exactly 4 expected"),
    ("10.1.1", "3 parts, exactly 4 expected"),
    ("1.2.3.4.5", "5 parts, exactly 4 expected"),
    ("1.2.3.4.", "trailing dot"),
    ("1..2.3", "empty part"),
    (".1.2.3", "empty part"),
    ("1.2.3.256", "part 256 is out of range 0..255"),
    ("999.1.1.1", "part 999 is out of range 0..255"),
    ("1.2.3.-4", "unexpected character '-'"),
    ("8.8.8.8;", "unexpected character ';'"),
    ("example.com", "host names are not accepted"),
    ("localhost", "host names are not accepted"),
    (" 8.8.8.8", "surrounding whitespace"),
    ("8.8.8.8 ", "surrounding whitespace"),
    ("8.8.8.8\n", "surrounding whitespace"),
    ("\t8.8.8.8", "surrounding whitespace"),
    ("8.8. 8.8", "contains whitespace"),
    ("8.8.8.8\x00", "contains a NUL character"),
    ("\x00", "contains a NUL character"),
    ("8.8.8.8\x7f", "contains control characters"),
    ("8.8\x1b.8.8", "contains control characters"),
    ("\uff11.\uff12.\uff13.\uff14", "non-ASCII character U+FF11"),  # full-width digits
    ("8.8.8.\uff18", "non-ASCII character U+FF18"),
    ("\u0668.\u0668.\u0668.\u0668", "non-ASCII character U+0668"),  # Arabic-Indic digits
    ("8.8.8.8\u200b", "non-ASCII character U+200B"),  # zero-width space
    ("fe80::1%eth0", "zone ids"),
    ("2a06:4880:1000::d5%1", "zone ids"),
    ("[2606:4700:4700::1111]", "brackets are not accepted"),
    ("[::1]:443", "brackets are not accepted"),
    ("1.2.3.0/24", "a single address, not a network"),
    ("8.8.8.8/32", "a single address, not a network"),
    ("2a06:4880::/32", "a single address, not a network"),
    ("8.8.8.8:53", "a port is not accepted"),
    ("1::2::3", "not a valid IPv6 address"),
    ("12345::", "not a valid IPv6 address"),
    ("1:2:3:4:5:6:7:8:9", "not a valid IPv6 address"),
    (":::", "not a valid IPv6 address"),
    ("1:2", "not a valid IPv6 address"),
    ("::1.2.3.04", "not a valid IPv6 address"),  # leading zero in the dotted tail
    ("::256.1.1.1", "not a valid IPv6 address"),
    ("::g", "unexpected character 'g'"),
    ("", "is empty"),
    ("A" * 46, "too long: 46 characters"),
    ("2606:4700:4700:0000:0000:0000:0255.255.255.255", "too long: 46 characters"),
]

REFUSED_TYPES = [
    (134744072, "must be a string, not int"),
    (None, "must be a string, not NoneType"),
    (["8.8.8.8"], "must be a string, not list"),
    (b"8.8.8.8", "must be a string, not bytes"),
    (True, "must be a string, not bool"),
    (8.8, "must be a string, not float"),
    ({"ip": "8.8.8.8"}, "must be a string, not dict"),
    (ipaddress.ip_address("8.8.8.8"), "must be a string, not IPv4Address"),
]

PRIVATE = "internal addresses are not looked up"

# First and last address of every refused IPv4 range (and a few inside).
REFUSED_V4_CASES = [
    ("0.0.0.0", "unspecified address (0.0.0.0/32)"),
    ("0.0.0.1", "'this network' address (0.0.0.0/8)"),
    ("0.255.255.255", "'this network' address (0.0.0.0/8)"),
    ("10.0.0.0", f"private address (10.0.0.0/8) — {PRIVATE}"),
    ("10.255.255.255", "private address (10.0.0.0/8)"),
    ("100.64.0.0", "carrier-grade NAT address (100.64.0.0/10)"),
    ("100.127.255.255", "carrier-grade NAT address (100.64.0.0/10)"),
    ("127.0.0.0", "loopback address (127.0.0.0/8)"),
    ("127.0.0.1", "loopback address (127.0.0.0/8)"),
    ("127.255.255.255", "loopback address (127.0.0.0/8)"),
    ("169.254.0.0", "link-local address (169.254.0.0/16)"),
    ("169.254.169.254", "link-local address (169.254.0.0/16)"),
    ("169.254.255.255", "link-local address (169.254.0.0/16)"),
    ("172.16.0.0", "private address (172.16.0.0/12)"),
    ("172.31.255.255", "private address (172.16.0.0/12)"),
    ("192.0.0.0", "IETF protocol assignments address (192.0.0.0/24)"),
    ("192.0.0.9", "IETF protocol assignments address (192.0.0.0/24)"),
    ("192.0.0.255", "IETF protocol assignments address (192.0.0.0/24)"),
    ("192.0.2.0", "documentation address (192.0.2.0/24)"),
    ("192.0.2.255", "documentation address (192.0.2.0/24)"),
    ("192.168.0.0", "private address (192.168.0.0/16)"),
    ("192.168.255.255", "private address (192.168.0.0/16)"),
    ("198.18.0.0", "benchmarking address (198.18.0.0/15)"),
    ("198.19.255.255", "benchmarking address (198.18.0.0/15)"),
    ("198.51.100.0", "documentation address (198.51.100.0/24)"),
    ("198.51.100.255", "documentation address (198.51.100.0/24)"),
    ("203.0.113.0", "documentation address (203.0.113.0/24)"),
    ("203.0.113.255", "documentation address (203.0.113.0/24)"),
    ("224.0.0.0", "multicast address (224.0.0.0/4)"),
    ("239.255.255.255", "multicast address (224.0.0.0/4)"),
    ("240.0.0.0", "reserved address (240.0.0.0/4)"),
    ("255.255.255.254", "reserved address (240.0.0.0/4)"),
    ("255.255.255.255", "limited broadcast address (255.255.255.255/32)"),
]

F7 = ":ffff:ffff:ffff:ffff:ffff:ffff:ffff"  # the last 7 groups all ones

REFUSED_V6_CASES = [
    ("::", "unspecified address (::/128)"),
    ("0:0:0:0:0:0:0:0", "unspecified address (::/128)"),
    ("::1", "loopback address (::1/128)"),
    ("0000:0000:0000:0000:0000:0000:0000:0001", "loopback address (::1/128)"),
    ("::2", "IPv4-compatible address (::/96)"),
    ("::8.8.8.8", "IPv4-compatible address (::/96)"),
    ("::ffff:ffff", "IPv4-compatible address (::/96)"),
    ("::ffff:0:0", "IPv4-mapped address (::ffff:0:0/96)"),
    ("::ffff:8.8.8.8", "IPv4-mapped address (::ffff:0:0/96)"),
    ("::FFFF:10.0.0.1", "IPv4-mapped address (::ffff:0:0/96)"),
    ("0:0:0:0:0:ffff:808:808", "IPv4-mapped address (::ffff:0:0/96)"),
    ("::ffff:ffff:ffff", "IPv4-mapped address (::ffff:0:0/96)"),
    ("::ffff:0:10.0.0.1", "IPv4-translated address (::ffff:0:0:0/96)"),
    ("64:ff9b:1::", "local-use IPv4/IPv6 translation address (64:ff9b:1::/48)"),
    ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "local-use IPv4/IPv6 translation address (64:ff9b:1::/48)"),
    ("100::", "discard-only address (100::/64)"),
    ("100::ffff:ffff:ffff:ffff", "discard-only address (100::/64)"),
    ("2001:2::", "benchmarking address (2001:2::/48)"),
    ("2001:2:0:ffff:ffff:ffff:ffff:ffff", "benchmarking address (2001:2::/48)"),
    ("2001:20::", "ORCHIDv2 address (2001:20::/28)"),
    ("2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", "ORCHIDv2 address (2001:20::/28)"),
    ("2001:db8::", "documentation address (2001:db8::/32)"),
    ("2001:DB8::1", "documentation address (2001:db8::/32)"),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "documentation address (2001:db8::/32)"),
    ("3fff::", "documentation address (3fff::/20)"),
    ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "documentation address (3fff::/20)"),
    ("fc00::", "private (unique-local) address (fc00::/7)"),
    ("fd12:3456:789a::1", f"private (unique-local) address (fc00::/7) — {PRIVATE}"),
    ("fdff" + F7, "private (unique-local) address (fc00::/7)"),
    ("fe80::", "link-local address (fe80::/10)"),
    ("FE80::1", "link-local address (fe80::/10)"),
    ("febf" + F7, "link-local address (fe80::/10)"),
    ("fec0::", "site-local (deprecated) address (fec0::/10)"),
    ("feff" + F7, "site-local (deprecated) address (fec0::/10)"),
    ("ff00::", "multicast address (ff00::/8)"),
    ("ff02::1", "multicast address (ff00::/8)"),
    ("ffff" + F7, "multicast address (ff00::/8)"),
    ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", "multicast address (ff00::/8)"),  # 45 characters
]

# (input, kind, embedded IPv4, reason of the IPv4 refusal)
EMBEDDED = [
    ("2002:a01:203::1", "6to4", "10.1.2.3", "private address (10.0.0.0/8)"),
    ("2002:0a01:0203:0:0:0:0:1", "6to4", "10.1.2.3", "private address (10.0.0.0/8)"),
    ("2002:7f00:1::1", "6to4", "127.0.0.1", "loopback address (127.0.0.0/8)"),
    ("2002:c000:201::", "6to4", "192.0.2.1", "documentation address (192.0.2.0/24)"),
    ("2002:a9fe:a9fe::1", "6to4", "169.254.169.254", "link-local address (169.254.0.0/16)"),
    ("2002::1", "6to4", "0.0.0.0", "unspecified address (0.0.0.0/32)"),
    ("2002:ac10::", "6to4", "172.16.0.0", "private address (172.16.0.0/12)"),
    ("2001:0:4136:e378:8000:63bf:f5fe:fdfc", "Teredo", "10.1.2.3", "private address (10.0.0.0/8)"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo", "127.0.0.1", "loopback address (127.0.0.0/8)"),
    ("2001:0:4136:e378:8000:63bf:34ff:8efa", "Teredo", "203.0.113.5", "documentation address (203.0.113.0/24)"),
    ("2001::ffff:ffff", "Teredo", "0.0.0.0", "unspecified address (0.0.0.0/32)"),
    ("64:ff9b::a01:203", "NAT64", "10.1.2.3", "private address (10.0.0.0/8)"),
    ("64:ff9b::10.1.2.3", "NAT64", "10.1.2.3", "private address (10.0.0.0/8)"),
    ("64:ff9b::127.0.0.1", "NAT64", "127.0.0.1", "loopback address (127.0.0.0/8)"),
    ("64:ff9b::c633:6401", "NAT64", "198.51.100.1", "documentation address (198.51.100.0/24)"),
    ("64:ff9b::100.64.0.1", "NAT64", "100.64.0.1", "carrier-grade NAT address (100.64.0.0/10)"),
]

# The ranges the brief lists; the tables must hold exactly these (plus one deliberate extra).
BRIEF_V4 = {
    "0.0.0.0/32", "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
}  # fmt: skip
BRIEF_V6 = {
    "::/128", "::1/128", "::/96", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001:2::/48",
    "2001:20::/28", "2001:db8::/32", "3fff::/20", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
}  # fmt: skip
EXTRA_V6 = {"::ffff:0:0:0/96"}  # IPv4-translated (SIIT): added beyond the brief


def refusal(value: object, extra: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None) -> str:
    with pytest.raises(AddressRefused) as raised:
        check_address(value, extra or ())
    assert raised.value.message == str(raised.value)
    return raised.value.message


@pytest.mark.parametrize(("value", "canonical", "version"), ACCEPTED)
def test_accepted(value: str, canonical: str, version: int) -> None:
    checked = check_address(value)
    assert checked == CheckedAddress(canonical=canonical, version=version, value=int(ipaddress.ip_address(canonical)))


@pytest.mark.parametrize(("value", "canonical", "version"), [row for row in ACCEPTED if row[2] == 4])
def test_accepted_ipv4_is_global_for_ipaddress_too(value: str, canonical: str, version: int) -> None:
    # Cross-check only: the rules do not depend on these flags.
    address = ipaddress.ip_address(value)
    assert address.is_global and not address.is_multicast


@pytest.mark.parametrize(("value", "needle"), REFUSED_SYNTAX + REFUSED_TYPES)
def test_refused_input(value: object, needle: str) -> None:
    assert needle in refusal(value)


@pytest.mark.parametrize(("value", "needle"), REFUSED_V4_CASES + REFUSED_V6_CASES)
def test_refused_category(value: str, needle: str) -> None:
    assert needle in refusal(value)


@pytest.mark.parametrize(("value", "kind", "inner", "needle"), EMBEDDED)
def test_refused_embedded_ipv4(value: str, kind: str, inner: str, needle: str) -> None:
    message = refusal(value)
    assert f"{kind} address embedding IPv4 address {inner}: " in message
    assert needle in message


@pytest.mark.parametrize(("value", "kind", "inner", "needle"), EMBEDDED)
def test_embedded_table_agrees_with_ipaddress(value: str, kind: str, inner: str, needle: str) -> None:
    # Guards the test data itself: the literals really embed the IPv4 address claimed.
    address = ipaddress.IPv6Address(value)
    if kind == "6to4":
        assert address.sixtofour == ipaddress.IPv4Address(inner)
    elif kind == "Teredo":
        assert address.teredo is not None and address.teredo[1] == ipaddress.IPv4Address(inner)
    else:
        assert address == ipaddress.IPv6Address(f"64:ff9b::{inner}")


def test_public_embedded_literals_agree_with_ipaddress() -> None:
    assert ipaddress.IPv6Address("2002:2d9b:cde9::1").sixtofour == ipaddress.IPv4Address("45.155.205.233")
    teredo = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:d264:3216").teredo
    assert teredo is not None and teredo[1] == ipaddress.IPv4Address("45.155.205.233")


def test_tables_hold_the_ranges_of_the_brief() -> None:
    assert {str(row.network) for row in REFUSED_V4} == BRIEF_V4
    assert {str(row.network) for row in REFUSED_V6} == BRIEF_V6 | EXTRA_V6


def ends_of(row: Refused) -> list[str]:
    # First and last address of the row, unless a more specific row claims it
    # (0.0.0.0 in 0.0.0.0/8, 255.255.255.255 in 240.0.0.0/4, :: and ::1 in ::/96).
    table = REFUSED_V4 if row.network.version == 4 else REFUSED_V6
    ends = {row.network.network_address, row.network.broadcast_address}
    return sorted(
        str(end)
        for end in ends
        if not any(end in other.network and other.network.prefixlen > row.network.prefixlen for other in table)
    )


@pytest.mark.parametrize("row", REFUSED_V4 + REFUSED_V6, ids=lambda row: str(row.network))
def test_every_table_row_refuses_its_ends(row: Refused) -> None:
    # The message must name this row's range: catches a wrong "most specific" pick.
    ends = ends_of(row)
    assert ends
    for end in ends:
        message = refusal(end)
        assert f"{row.category} address ({row.network})" in message


def test_checked_address_is_frozen() -> None:
    checked = check_address("8.8.8.8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.canonical = "10.0.0.1"  # type: ignore[misc]
    assert checked.value == 0x08080808


def test_str_subclass_is_refused() -> None:
    class Sneaky(str):
        pass

    assert "must be a string, not Sneaky" in refusal(Sneaky("8.8.8.8"))


def test_long_hostile_input_is_cut() -> None:
    message = refusal("Q" * 10_000)
    assert message.count("Q") == 64
    assert "10000 characters" in message
    assert len(message) < 200


def test_echo_is_cut_just_above_64_characters() -> None:
    assert repr("B" * 64) in refusal("B" * 64)
    message = refusal("B" * 65)
    assert "B" * 65 not in message
    assert message.count("B") == 64


def test_control_characters_are_escaped_and_cut() -> None:
    message = refusal("\x1b[2J" * 1000)
    assert "\x1b" not in message
    assert message.count("[2J") == 16  # 64 characters of input, 4 per repetition
    assert "\\x1b" in message


@pytest.mark.parametrize(("value", "needle"), REFUSED_SYNTAX + REFUSED_V4_CASES + REFUSED_V6_CASES)
def test_messages_are_printable_and_short(value: str, needle: str) -> None:
    message = refusal(value)
    assert message.isprintable()
    assert len(message) <= 200


# --- policy ranges ---------------------------------------------------------

KEY = "tools.check_ip_reputation.refused_ranges"


def test_parse_networks() -> None:
    networks = parse_networks(["45.155.204.0/23", "2A06:4880::/32", "0.0.0.0/0"], KEY)
    assert networks == [
        ipaddress.IPv4Network("45.155.204.0/23"),
        ipaddress.IPv6Network("2a06:4880::/32"),
        ipaddress.IPv4Network("0.0.0.0/0"),
    ]
    assert parse_networks([], KEY) == []


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("10.20.0.1/16", "has host bits set: '10.20.0.1/16' (did you mean 10.20.0.0/16?)"),
        ("2a06:4880::1/32", "has host bits set: '2a06:4880::1/32' (did you mean 2a06:4880::/32?)"),
        ("garbage", "is not a CIDR network"),
        ("10.0.0.0", "is not a CIDR network"),
        ("10.0.0.0/255.0.0.0", "is not a CIDR network"),
        ("10.0.0.0/08", "is not a CIDR network"),
        (" 10.0.0.0/8", "is not a CIDR network"),
        ("fe80::%eth0/64", "is not a CIDR network"),
        ("10.0.0.0/33", "is not a valid CIDR network"),
        ("::/129", "is not a valid CIDR network"),
        ("010.0.0.0/8", "is not a valid CIDR network"),
        ("1:2/64", "is not a valid CIDR network"),
        (5, "must be a CIDR string"),
        (None, "must be a CIDR string"),
    ],
)
def test_parse_networks_errors_name_the_entry(bad: object, needle: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_networks(["10.0.0.0/8", bad], KEY)  # type: ignore[list-item]
    assert f"{KEY}[1]" in str(raised.value)
    assert needle in str(raised.value)


def test_parse_networks_wants_a_list() -> None:
    with pytest.raises(ValueError, match="must be a list of CIDR strings, not str"):
        parse_networks("10.0.0.0/8", KEY)  # type: ignore[arg-type]


def test_parse_networks_cuts_a_long_value() -> None:
    with pytest.raises(ValueError) as raised:
        parse_networks(["Z" * 5000 + "/8"], KEY)
    assert str(raised.value).count("Z") == 64


POLICY = ["45.155.204.0/23", "2a06:4880::/32"]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("45.155.204.0", "in a range the policy excludes (45.155.204.0/23)"),
        ("45.155.205.233", "in a range the policy excludes (45.155.204.0/23)"),
        ("45.155.205.255", "in a range the policy excludes (45.155.204.0/23)"),
        ("2a06:4880:1000::d5", "in a range the policy excludes (2a06:4880::/32)"),
        ("2A06:4880:FFFF:ffff:ffff:ffff:ffff:ffff", "in a range the policy excludes (2a06:4880::/32)"),
        ("2002:2d9b:cde9::1", "6to4 address embedding IPv4 address 45.155.205.233: in a range the policy excludes"),
        ("64:ff9b::2d9b:cc01", "NAT64 address embedding IPv4 address 45.155.204.1: in a range the policy excludes"),
        ("2001:0:4136:e378:8000:63bf:d264:3216", "Teredo address embedding IPv4 address 45.155.205.233: in a range"),
        ("10.0.0.1", "private address (10.0.0.0/8)"),  # the built-in reason wins
    ],
)
def test_extra_refused(value: str, needle: str) -> None:
    assert needle in refusal(value, parse_networks(POLICY, KEY))


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("45.155.203.255", "45.155.203.255"),
        ("45.155.206.0", "45.155.206.0"),
        ("2a06:487f:ffff:ffff:ffff:ffff:ffff:ffff", "2a06:487f:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2a06:4881::", "2a06:4881::"),
        ("8.8.8.8", "8.8.8.8"),
    ],
)
def test_extra_refused_boundaries(value: str, canonical: str) -> None:
    assert check_address(value, parse_networks(POLICY, KEY)).canonical == canonical
