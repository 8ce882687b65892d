"""Figures of study results broken down by phase: grouped box plots and curves per phase."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.plots import NO_DATA, PHASE_COLOURS, save_figure
from zoo.phases import PHASES

UNLABELLED = "unlabelled"
Rows = Sequence[dict[str, Any]]


def phase_of(row: dict[str, Any]) -> str:
    return row["phase"] if row.get("phase") in PHASES else UNLABELLED


def by_phase(rows: Rows, value: Callable[[dict[str, Any]], float | None]) -> dict[str, list[float]]:
    """Finite values of `value(row)` grouped by the row's phase, in phase order."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        v = value(row)
        if v is not None and math.isfinite(v):
            groups.setdefault(phase_of(row), []).append(float(v))
    return {p: groups[p] for p in (*PHASES, UNLABELLED) if p in groups}


def _colour(phase: str) -> str:
    return PHASE_COLOURS.get(phase, NO_DATA)


def _axes(title: str, groups: int) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + 1.1 * groups), 4.0), dpi=150,
                           layout="constrained")
    ax.set_title(title, fontsize=10)
    return fig, ax


def phase_boxes(series: dict[str, dict[str, list[float]]], ylabel: str, title: str,
                path: Path, zero_line: bool = False) -> Path:
    """Box plots per phase, one box per series side by side, every value shown as a dot.

    Args:
        series: series label -> phase -> values (e.g. {"epoch average": {"IV-B": [...]}}).
        ylabel: the y axis with its unit.
        zero_line: draw y = 0 (for changes).
    """
    from matplotlib.patches import Patch

    phases = [p for p in (*PHASES, UNLABELLED) if any(p in s for s in series.values())]
    fig, ax = _axes(title, len(phases) * max(1, len(series)) // 2 + 1)
    width = 0.8 / max(1, len(series))
    hatches = ["", "///", "...", "xx"]
    jitter = np.random.default_rng(0)  # fixed: the same figure every run
    for number, (label, groups) in enumerate(series.items()):
        for x, phase in enumerate(phases):
            values = groups.get(phase, [])
            if not values:
                continue
            centre = x - 0.4 + width * (number + 0.5)
            box = ax.boxplot([values], positions=[centre], widths=width * 0.85,
                             patch_artist=True, showfliers=False)
            box["boxes"][0].set(facecolor=_colour(phase), alpha=0.75,
                                hatch=hatches[number % len(hatches)])
            box["medians"][0].set(color="black")
            ax.scatter(centre + jitter.uniform(-width / 4, width / 4, len(values)), values,
                       s=9, color="black", alpha=0.6, zorder=3)
    ax.set_xticks(range(len(phases)), phases)
    ax.set_xlabel("phase of the cell")
    ax.set_ylabel(ylabel)
    if zero_line:
        ax.axhline(0.0, color="#555555", linewidth=0.8, linestyle="--")
    if len(series) > 1:
        ax.legend(handles=[Patch(facecolor="white", edgecolor="black",
                                 hatch=hatches[n % len(hatches)], label=label)
                           for n, label in enumerate(series)], frameon=False, fontsize=8)
    return save_figure(fig, path)


def phase_curves(xs: Sequence[float], curves: dict[str, list[list[float]]], xlabel: str,
                 ylabel: str, title: str, path: Path) -> Path:
    """Mean ± standard deviation of a value at each x, one line per phase.

    Args:
        curves: phase -> per x, the values of that phase's models.
    """
    fig, ax = _axes(title, 4)
    for phase, values in curves.items():
        means = [float(np.mean(v)) if v else math.nan for v in values]
        stds = [float(np.std(v)) if v else math.nan for v in values]
        counts = max(len(v) for v in values)
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, color=_colour(phase),
                    label=f"{phase} ({counts} models)")
    ax.set_xscale("log")
    ax.set_xticks(list(xs), [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.invert_xaxis()  # sparser to the right
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize=8, title="phase")
    return save_figure(fig, path)
