"""The plots of ``docs/performance.md`` (matplotlib, imported only here and only when drawing).

- ``ratios.png``: every benchmark's ratio against its bar, on a log scale;
- ``runs.png``: every timed run of each side, one small panel per benchmark;
- ``<name>.png``: a benchmark's distributions (latency quantiles, say) as cumulative curves.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, whatever the environment says

import matplotlib.pyplot as plt

from benchmarks.harness import Result

__all__ = ["draw"]

COLORS = {"PASS": "#2e7d32", "MISS": "#c62828", "REPORT": "#757575"}
SIDES = {"anchor": "#1565c0", "subject": "#ef6c00"}
DPI = 100


def draw(results: list[Result], directory: Path) -> dict[str, Path]:
    """Draw every plot into ``directory`` (its old PNGs are removed first)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    drawn: dict[str, Path] = {}
    if not results:
        return drawn
    drawn["ratios"] = _ratios(results, directory / "ratios.png")
    drawn["runs"] = _runs(results, directory / "runs.png")
    for r in results:
        if r.details.distributions:
            drawn[r.name] = _distributions(r, directory / f"{r.name}.png")
    return drawn


def _ratios(results: list[Result], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(results) + 1.4))
    names = [r.name for r in results][::-1]
    ordered = results[::-1]
    ratios = [max(r.ratio, 1e-3) for r in ordered]
    colors = [COLORS[r.verdict] for r in ordered]
    ax.barh(names, ratios, color=colors, height=0.6)
    for y, r in enumerate(ordered):
        if r.bar.kind != "report":
            ax.plot([r.bar.min_ratio] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
        ax.annotate(f"{r.ratio:.2f}", (max(r.ratio, 1e-3), y), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_xscale("log")
    low = min(min(ratios), *(r.bar.min_ratio for r in results if r.bar.kind != "report"), 1.0)
    high = max(max(ratios), 1.0)
    ax.set_xlim(10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high) + 0.3))
    ax.axvline(1.0, color="#9e9e9e", linewidth=0.8, linestyle="--")
    ax.set_xlabel("ratio = anchor time / subject time (log scale); black tick: the bar")
    ax.set_title("plasma_nb against its raw anchors (green pass, red miss, grey report)")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _runs(results: list[Result], path: Path) -> Path:
    cols = min(4, len(results))
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results, strict=False):
        scale, unit = _scale(max(max(r.anchor), max(r.subject)))
        for x, (side, times) in enumerate((("anchor", r.anchor), ("subject", r.subject))):
            values = [t * scale for t in times]
            ax.scatter([x] * len(values), values, s=12, color=SIDES[side], alpha=0.7)
            median = statistics.median(values)
            ax.plot([x - 0.25, x + 0.25], [median, median], color=SIDES[side], linewidth=2)
        ax.set_xticks([0, 1], ["anchor", "subject"], fontsize=8)
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"{r.name}\nratio {r.ratio:.2f} ({r.verdict.lower()})", fontsize=8,
                     color=COLORS[r.verdict])
    for ax in list(axes.flat)[len(results):]:
        ax.set_visible(False)
    fig.suptitle("Every timed run (dots) and the median (line) of each side", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _distributions(r: Result, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    series = r.details.distributions
    scale, unit = _scale(max((max(v) for v in series.values() if v), default=1.0))
    for name, values in series.items():
        if not values:
            continue
        ordered = sorted(v * scale for v in values)
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        color = next((c for side, c in SIDES.items() if side in name), None)
        ax.step(ordered, fractions, where="post", label=name, **_color(color))
    ax.set_xscale("log")
    ax.set_xlabel(unit + " (log scale)")
    ax.set_ylabel("fraction at or below")
    ax.axhline(0.99, color="#9e9e9e", linewidth=0.8, linestyle=":")
    ax.set_title(f"{r.name}: cumulative distributions (dotted line: p99)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _scale(largest: float) -> tuple[float, str]:
    if largest < 1e-3:
        return 1e6, "µs"
    if largest < 2:
        return 1e3, "ms"
    return 1.0, "s"


def _color(color: str | None) -> dict[str, Any]:
    return {"color": color} if color else {}
