"""Threat-intel database figures: compile time, size, open time, lookups per second.

Generates an IPv4 netset of N entries (random /32s and /24s, a few /16s,
and /32s placed inside listed networks so prefixes nest), plus an IPv6 netset of
N/10 entries, compiles the IPv4 one, recompiles it with the first database
as history, then compiles both,
and times lookups in-process over 1M random addresses: uniform over the
space (mostly misses, like real traffic) and drawn from listed networks
(every lookup builds matches). No assertions; just figures.
Usage: .venv/bin/python bench/intel_bench.py [entries]
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bastion_wire.intel_db import IntelDatabase  # noqa: E402
from broker.intel.compile import FeedSource, compile_feeds  # noqa: E402
from broker.intel.feeds import parse_feed  # noqa: E402

LOOKUPS = 1_000_000
V6_BASES = [0x2001_0DB8 << 96, 0x2A00_1450 << 96, 0x2600_1F00 << 96]


def ipv4_feed(rng: random.Random, entries: int) -> tuple[str, list[int]]:
    """Netset text and one address inside each listed network."""
    lines, inside = [], []
    for _ in range(entries):
        roll = rng.random()
        address = rng.getrandbits(32)
        if roll < 0.5:
            plen = 32
        elif roll < 0.97:
            plen = 24
        elif roll < 0.972:  # 2000 per million: they cover 3% of the space
            plen = 16
        else:  # a /32 inside an earlier network: nesting
            address = (inside[-1] & 0xFFFFFF00 | rng.getrandbits(8)) if inside else address
            plen = 32
        network = address >> (32 - plen) << (32 - plen)
        inside.append(network | rng.getrandbits(32 - plen))
        quad = ".".join(str(network >> shift & 0xFF) for shift in (24, 16, 8, 0))
        lines.append(quad if plen == 32 else f"{quad}/{plen}")
    return "\n".join(lines) + "\n", inside


def ipv6_feed(rng: random.Random, entries: int) -> tuple[str, list[int]]:
    import ipaddress

    lines, inside = [], []
    for _ in range(entries):
        plen = rng.choice((48, 64, 64, 128, 128, 128))
        address = rng.choice(V6_BASES) | rng.getrandbits(96)
        network = address >> (128 - plen) << (128 - plen)
        inside.append(network | rng.getrandbits(128 - plen))
        lines.append(str(ipaddress.IPv6Network((network, plen))))
    return "\n".join(lines) + "\n", inside


def rate(lookup: Callable[[int, int], list[object]], version: int, addresses: list[int]) -> tuple[float, int]:
    hits = 0
    started = time.perf_counter()
    for address in addresses:
        if lookup(version, address):
            hits += 1
    return len(addresses) / (time.perf_counter() - started), hits


def main() -> None:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rng = random.Random(20261124)
    with tempfile.TemporaryDirectory() as directory:
        v4_text, v4_inside = ipv4_feed(rng, entries)
        v6_text, v6_inside = ipv6_feed(rng, max(1, entries // 10))
        v4_path, v6_path = Path(directory, "v4.netset"), Path(directory, "v6.netset")
        v4_path.write_text(v4_text)
        v6_path.write_text(v6_text)
        output = os.path.join(directory, "intel.db")
        sources = [
            FeedSource("v4", str(v4_path), "netset", "malware", 90),
            FeedSource("v6", str(v6_path), "netset", "malware", 90),
        ]

        started = time.perf_counter()
        parse_feed(v4_path.read_bytes(), "netset")
        parse_v4 = time.perf_counter() - started
        report_v4 = compile_feeds(sources[:1], output, now=1_000_000)
        print(f"IPv4 netset: {entries} lines, {v4_path.stat().st_size / 1e6:.1f} MB")
        print(
            f"  compile {report_v4.seconds:.2f} s = parse {parse_v4:.2f} s"
            f" + read/build/write {report_v4.seconds - parse_v4:.2f} s"
            f" -> {report_v4.entries} entries, {report_v4.intervals_v4} intervals"
            f", {os.path.getsize(output) / 1e6:.1f} MB"
        )

        again = compile_feeds(sources[:1], output, previous=output, now=2_000_000)
        print(f"  recompile with the first database as history: {again.seconds:.2f} s")

        started = time.perf_counter()
        parse_feed(v6_path.read_bytes(), "netset")
        parse_v6 = time.perf_counter() - started
        report = compile_feeds(sources, output, previous=output, now=3_000_000)
        print(
            f"IPv4 + {len(v6_inside)} IPv6 entries (IPv6 parse alone {parse_v6:.2f} s)"
            f", with history: compile {report.seconds:.2f} s"
            f" -> {report.entries} entries ({report.active} active)"
            f", {report.intervals_v4} + {report.intervals_v6} intervals,"
            f" {os.path.getsize(output) / 1e6:.1f} MB"
        )

        fd = os.open(output, os.O_RDONLY)
        started = time.perf_counter()
        database = IntelDatabase.open_fd(fd)
        first_open = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(100):
            IntelDatabase.open_fd(fd).close()
        print(
            f"open_fd: first {first_open * 1e3:.2f} ms"
            f", then {(time.perf_counter() - started) * 10:.2f} ms per open/close"
        )

        lookup = database.lookup
        figures = [
            ("IPv4 uniform random", 4, [rng.getrandbits(32) for _ in range(LOOKUPS)]),
            ("IPv4 listed (hits)", 4, [rng.choice(v4_inside) for _ in range(LOOKUPS)]),
            ("IPv6 random in listed /32s", 6, [rng.choice(V6_BASES) | rng.getrandbits(96) for _ in range(LOOKUPS)]),
            ("IPv6 listed (hits)", 6, [rng.choice(v6_inside) for _ in range(LOOKUPS)]),
        ]
        for label, version, addresses in figures:
            per_second, hits = rate(lookup, version, addresses)
            print(f"{label:<28} {per_second / 1e6:5.2f} M lookups/s  ({hits / len(addresses):6.1%} matched)")
        database.close()
        os.close(fd)


if __name__ == "__main__":
    main()
