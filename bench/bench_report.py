"""Rows of the bench/run.py report: one printed table and the same data as JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NO_TARGET = "—"


@dataclass
class Row:
    case: str
    unit: str
    bastion: float | None
    other: float | None = None
    other_label: str = "baseline"
    ratio: float | None = None
    ratio_label: str = ""
    target: str = NO_TARGET
    verdict: str = NO_TARGET
    other_text: str = ""  # shown instead of `other` when there is no figure ("not installed")
    note: str = ""


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def at_most(value: float | None, limit: float | None) -> str:
    if value is None or limit is None:
        return "n/a"
    return "meets" if value <= limit else "misses"


def at_least(value: float | None, limit: float | None) -> str:
    if value is None or limit is None:
        return "n/a"
    return "meets" if value >= limit else "misses"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (p99 of 50 samples is the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    digits = 0 if abs(value) >= 100 else (1 if abs(value) >= 10 else 2)
    return f"{value:,.{digits}f} {unit}".strip()


def _ratio_text(value: float) -> str:
    return f"{value:.2g}" if abs(value) < 0.1 else f"{value:.2f}"


def _cells(index: int, row: Row) -> list[str]:
    other = row.other_text or (_number(row.other, row.unit) if row.other is not None else NO_TARGET)
    if row.other_label and other != NO_TARGET:
        other = f"{row.other_label}: {other}"
    shown_ratio = f"{_ratio_text(row.ratio)}× {row.ratio_label}".strip() if row.ratio is not None else NO_TARGET
    return [str(index), row.case, _number(row.bastion, row.unit), other, shown_ratio, row.target, row.verdict]


HEADERS = ["#", "case", "Bastion", "baseline / bare", "ratio", "target", "verdict"]


def table(rows: list[Row]) -> str:
    cells = [HEADERS] + [_cells(index, row) for index, row in enumerate(rows, 1)]
    widths = [max(len(line[column]) for line in cells) for column in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  [{index}] {row.note}" for index, row in enumerate(rows, 1) if row.note]
    return "\n".join(lines + (["", "notes:"] + notes if notes else []))


def write_json(path: Path, rows: list[Row], details: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": [asdict(row) for row in rows], **details}, indent=2, default=str) + "\n")
