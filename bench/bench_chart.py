"""The latency chart of docs/PERFORMANCE.md: Bastion vs the baseline, one run's calls.

Empirical CDFs of end-to-end query_logs latency on the 1 MB log (x: ms, log
scale; y: share of calls at or below), one panel per pacing (50 ms pause,
back to back), p50 and p99 marked. Drawn with matplotlib when it is installed
(`make bench` installs the bench extra); otherwise the bench says so and skips it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"bastion": "#1f6feb", "baseline": "#9a6700"}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def latency_chart(latency_ms: dict[str, dict[str, list[float]]], path: Path, title: str) -> str | None:
    """Write the PNG; return why not when it cannot be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    panels = [(label, series) for label, series in latency_ms.items() if all(series.values())]
    if not panels:
        return "no latency figures in this run"
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), sharey=True, squeeze=False)
    for axis, (label, series) in zip(axes[0], panels, strict=True):
        _panel(axis, label, series)
    axes[0][0].set_ylabel("share of calls at or below")
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def _panel(axis: Any, label: str, series: dict[str, list[float]]) -> None:
    import matplotlib.ticker

    for name, values in series.items():
        ordered = sorted(values)
        shares = [(index + 1) / len(ordered) for index in range(len(ordered))]
        p50, p99 = _percentile(ordered, 0.5), _percentile(ordered, 0.99)
        axis.step(
            ordered, shares, where="post", color=COLORS.get(name), label=f"{name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        axis.plot([p50, p99], [0.5, 0.99], "o", color=COLORS.get(name), markersize=4)
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axis.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axis.tick_params(axis="x", which="minor", labelsize=7)
    axis.set_xlabel("end-to-end latency of one query_logs call (ms, log scale)")
    axis.set_title(f"1 MB log, {label}", fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
