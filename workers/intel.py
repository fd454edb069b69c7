"""Worker kind "intel": one address against the compiled intel database.

The database arrives as an open descriptor and is mapped, not parsed, so the
cost of a call does not grow with the feeds. Optional MaxMind-format
databases (ASN, country) arrive as further descriptors. The worker has no
filesystem and no network; it answers with one IntelReport and Done.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import maxminddb

from bastion_wire.intel_db import IntelDatabase, IntelDatabaseError
from bastion_wire.protocol import Done, Enrichment, Failed, FeedInfo, IntelMatch, IntelReport, IntelRequest
from workers.channel import Send

MAX_NAME = 200  # enrichment strings come from a file: bound them


def lookup(request: IntelRequest, fds: list[int], send: Send) -> None:
    if len(request.packed) not in (4, 16) or len(fds) != 1 + len(request.enrich):
        send(Failed("bad_request", "an intel request needs a 4- or 16-byte address and one descriptor per database"))
        return
    try:
        database = IntelDatabase.open_fd(fds[0])
    except IntelDatabaseError as exc:
        send(Failed("bad_database", str(exc)[:300]))
        return
    try:
        report = _report(database, request)
    except IntelDatabaseError as exc:
        send(Failed("bad_database", str(exc)[:300]))
        return
    finally:
        database.close()
    report.enrichment, report.notes = _enrich(request, fds[1:])
    send(report)
    send(Done(more=False))


def _report(database: IntelDatabase, request: IntelRequest) -> IntelReport:
    version = 4 if len(request.packed) == 4 else 6
    found = database.lookup(version, int.from_bytes(request.packed, "big"))
    if not request.include_history:
        found = [match for match in found if match.active]
    matches = [IntelMatch(m.feed, m.prefix, m.first_seen, m.last_seen, m.active) for m in found[: request.max_matches]]
    feeds = [
        FeedInfo(f.name, f.category, f.confidence, f.source, f.sha256, f.entries, f.malformed, f.source_mtime)
        for f in database.meta.feeds
    ]
    notes = [f"{len(found) - len(matches)} more matching entries not shown"] if len(found) > len(matches) else []
    return IntelReport(
        compiled_at=database.meta.compiled_at, feeds=feeds, matches=matches, enrichment=Enrichment(), notes=notes
    )


def _enrich(request: IntelRequest, fds: list[int]) -> tuple[Enrichment, list[str]]:
    enrichment, notes = Enrichment(), []
    address = _text(request.packed)
    for kind, fd in zip(request.enrich, fds, strict=True):  # lookup() checked the count
        try:
            # MODE_FD reads the whole (small) file from a file object; the descriptor stays ours.
            # Unbuffered, so opening it does not probe isatty (an ioctl seccomp does not allow).
            with (
                os.fdopen(fd, "rb", buffering=0, closefd=False) as file,
                maxminddb.open_database(file, mode=maxminddb.MODE_FD) as reader,
            ):
                record = reader.get(address)
        except (maxminddb.InvalidDatabaseError, OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
            notes.append(f"{kind} database unreadable: {type(exc).__name__}")
            continue
        finally:
            os.close(fd)
        if isinstance(record, dict):
            _absorb(kind, record, enrichment)
    return enrichment, notes


def _absorb(kind: str, record: dict[str, Any], enrichment: Enrichment) -> None:
    if kind == "asn":
        number = record.get("autonomous_system_number")
        organization = record.get("autonomous_system_organization")
        enrichment.asn = number if type(number) is int and 0 <= number < 2**32 else None
        enrichment.organization = organization[:MAX_NAME] if isinstance(organization, str) else None
        return
    country = record.get("country")
    if isinstance(country, dict):
        code, names = country.get("iso_code"), country.get("names")
        enrichment.country = code[:2] if isinstance(code, str) else None
        name = names.get("en") if isinstance(names, dict) else None
        enrichment.country_name = name[:MAX_NAME] if isinstance(name, str) else None


def _text(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))
