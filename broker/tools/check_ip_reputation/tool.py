"""The check_ip_reputation tool: schemas, argument validation and the verdict.

The address is validated here, before any worker starts (broker/tools/check_ip_reputation/address.py).
The lookup runs in an "intel" worker on the compiled database; this module
turns its report into the verdict, the matches, the enrichment and the feed
ages the client sees. Absence from every feed is "unlisted", never "clean".
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mcp_types as types

from bastion_wire.protocol import IntelReport
from broker.errors import ToolError
from broker.policy import Intel
from broker.tools.arguments import check_bool, check_names
from broker.tools.check_ip_reputation.address import AddressRefused, CheckedAddress, Network, check_address
from broker.tools.schema import nullable

NAME = "check_ip_reputation"
ARGUMENTS = {"ip_address", "include_history"}
REQUIRED = {"ip_address"}
MAX_MATCHES = 200
VERDICTS = ["malicious", "suspicious", "unlisted"]

_STAMP = {"type": "string", "description": "ISO 8601 UTC"}
_FEED_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string"},
    "category": {"type": "string"},
    "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    "entries": {"type": "integer", "minimum": 0},
    "malformed_lines": {"type": "integer", "minimum": 0},
    "updated": _STAMP,
    "age_hours": {"type": "number"},
    "stale": {"type": "boolean"},
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ip_address": {"type": "string", "description": "the canonical form of the address looked up"},
        "version": {"type": "integer", "enum": [4, 6]},
        "verdict": {"type": "string", "enum": VERDICTS},
        "matches": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "feed": {"type": "string"},
                    "category": {"type": "string"},
                    "matched_prefix": {"type": "string"},
                    "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
                    "first_seen": _STAMP,
                    "last_seen": _STAMP,
                    "listed_now": {"type": "boolean"},
                },
                "required": [
                    "feed",
                    "category",
                    "matched_prefix",
                    "confidence",
                    "first_seen",
                    "last_seen",
                    "listed_now",
                ],
                "additionalProperties": False,
            },
        },
        "enrichment": nullable(
            {
                "type": "object",
                "properties": {
                    "asn": nullable({"type": "integer"}),
                    "organization": nullable({"type": "string"}),
                    "country": nullable({"type": "string"}),
                    "country_name": nullable({"type": "string"}),
                },
                "additionalProperties": False,
            }
        ),
        "feeds": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": _FEED_PROPERTIES,
                "required": sorted(_FEED_PROPERTIES),
                "additionalProperties": False,
            },
        },
        "database_compiled_at": _STAMP,
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
    "required": [
        "ip_address",
        "version",
        "verdict",
        "matches",
        "enrichment",
        "feeds",
        "database_compiled_at",
        "warnings",
    ],
    "additionalProperties": False,
}
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ip_address": {
            "type": "string",
            "description": "One public IPv4 or IPv6 address in canonical text form (e.g. 45.155.205.233). "
            "Private, loopback, link-local, multicast, reserved, CGNAT, documentation and similar ranges are refused.",
            "minLength": 2,
            "maxLength": 45,
        },
        "include_history": {
            "type": "boolean",
            "description": "Also return listings the feeds have dropped since (with first/last seen).",
            "default": False,
        },
    },
    "required": ["ip_address"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class IntelArgs:
    address: CheckedAddress
    include_history: bool


def tool() -> types.Tool:
    return types.Tool(
        name=NAME,
        title="Check an IP address against threat intelligence",
        description="Look one public IP address up in the offline threat-intel feeds configured on this server "
        "(compiled locally; no external service is contacted). Verdict: malicious, suspicious or unlisted - "
        "unlisted means no configured feed lists it, not that it is harmless. Returns every matching feed "
        "entry, ASN/country enrichment when configured, and the age of each feed.",
        input_schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False),
    )


def parse(arguments: object, refused: Sequence[Network]) -> IntelArgs:
    args = check_names(arguments, ARGUMENTS, REQUIRED)
    history = check_bool(args.get("include_history", False), "include_history")
    try:
        address = check_address(args["ip_address"], refused)
    except AddressRefused as exc:
        raise ToolError(f"ip_address refused: {exc}") from None
    return IntelArgs(address=address, include_history=history)


def packed(address: CheckedAddress) -> bytes:
    return ipaddress.ip_address(address.canonical).packed


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age_hours(stamp: str, now: float) -> float:
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("inf")
    return round(max(0.0, now - then) / 3600, 1)


def result(
    args: IntelArgs, report: IntelReport, intel: Intel, notes: list[str], now: float | None = None
) -> types.CallToolResult:
    now = time.time() if now is None else now
    feeds = [_feed(feed, _age_hours(feed.source_mtime, now), intel.max_age_hours) for feed in report.feeds]
    matches = [_match(match, report, feeds) for match in report.matches if match.feed < len(feeds)]
    warnings = [
        f"feed {feed['name']} is {feed['age_hours']} hours old"
        f" (policy max_age_hours {intel.max_age_hours:g}): refresh it"
        for feed in feeds
        if feed["stale"]
    ]
    warnings += notes + report.notes
    structured = {
        "ip_address": args.address.canonical,
        "version": args.address.version,
        "verdict": _verdict(matches, intel.malicious_confidence),
        "matches": matches,
        "enrichment": _enrichment(report),
        "feeds": feeds,
        "database_compiled_at": report.compiled_at,
        "warnings": warnings,
    }
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=_as_text(structured))], structured_content=structured
    )


def _feed(feed: Any, age_hours: float, max_age_hours: float) -> dict[str, Any]:
    return {
        "name": feed.name,
        "category": feed.category,
        "confidence": feed.confidence,
        "entries": feed.entries,
        "malformed_lines": feed.malformed,
        "updated": feed.source_mtime,
        "age_hours": age_hours,
        "stale": age_hours > max_age_hours,
    }


def _match(match: Any, report: IntelReport, feeds: list[dict[str, Any]]) -> dict[str, Any]:
    feed = feeds[match.feed]
    return {
        "feed": feed["name"],
        "category": feed["category"],
        "matched_prefix": match.prefix,
        "confidence": feed["confidence"],
        "first_seen": _iso(match.first_seen),
        "last_seen": _iso(match.last_seen),
        "listed_now": match.active,
    }


def _verdict(matches: list[dict[str, Any]], malicious_at: int) -> str:
    current = [match for match in matches if match["listed_now"]]
    if any(match["confidence"] >= malicious_at for match in current):
        return "malicious"
    return "suspicious" if current else "unlisted"


def _enrichment(report: IntelReport) -> dict[str, Any] | None:
    found = {
        "asn": report.enrichment.asn,
        "organization": report.enrichment.organization,
        "country": report.enrichment.country,
        "country_name": report.enrichment.country_name,
    }
    return found if any(value is not None for value in found.values()) else None


def _as_text(structured: dict[str, Any]) -> str:
    lines = [f"{structured['ip_address']}: {structured['verdict'].upper()}"]
    if structured["verdict"] == "unlisted":
        lines[0] += " (no configured feed lists it; this is not evidence that it is harmless)"
    for match in structured["matches"]:
        state = "listed" if match["listed_now"] else "formerly listed"
        lines.append(
            f"- {state} in {match['feed']} ({match['category']}, confidence {match['confidence']})"
            f" as {match['matched_prefix']}; "
            f"first seen {match['first_seen']}, last seen {match['last_seen']}"
        )
    enrichment = structured["enrichment"]
    if enrichment:
        organization, country = enrichment["organization"] or "", enrichment["country"] or "?"
        lines.append(
            f"AS{enrichment['asn']} {organization}; country {country} {enrichment['country_name'] or ''}".rstrip()
        )
    ages = ", ".join(f"{feed['name']} ({feed['age_hours']} h old)" for feed in structured["feeds"])
    lines.append(f"feeds: {ages}")
    lines += [f"warning: {warning}" for warning in structured["warnings"]]
    return "\n".join(lines)
