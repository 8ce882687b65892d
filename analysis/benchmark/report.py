"""The benchmark's results: one table (Parquet), its Markdown summary and a figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from analysis.benchmark.baselines import CONTROL
from analysis.benchmark.evaluator import PRIMARY
from zoo.folder.names import write_atomically

Rows = list[dict[str, Any]]


def margins(rows: Rows) -> Rows:
    """Per task and scheme, the best weights-only baseline's primary metric minus the
    control's (positive: the weights carry signal beyond the hyperparameters)."""
    out = []
    keys = sorted({(r["task"], r["scheme"]) for r in rows})
    for task, scheme in keys:
        primary = [r for r in rows if (r["task"], r["scheme"]) == (task, scheme)
                   and r["metric"] == PRIMARY[r["kind"]]]
        control = [r["mean"] for r in primary if r["baseline"] == CONTROL]
        weights = [r for r in primary if r["baseline"] != CONTROL and math.isfinite(r["mean"])]
        if not control or not weights or not math.isfinite(control[0]):
            continue
        best = max(weights, key=lambda r: r["mean"])
        out.append({"task": task, "scheme": scheme, "metric": best["metric"],
                    "control": control[0], "best": best["baseline"],
                    "margin": best["mean"] - control[0]})
    return out


def _cell(row: dict[str, Any], folds: int) -> str:
    """mean ± half-width; the folds counted when fewer than the scheme's (the others had an
    undefined score: a constant target, a single phase)."""
    if not math.isfinite(row["mean"]):
        return "–"
    half = f" ± {row['ci95']:.3f}" if math.isfinite(row["ci95"]) else ""
    counted = f" ({row['folds']}/{folds} folds)" if row["folds"] < folds else ""
    return f"{row['mean']:.3f}{half}{counted}"


def markdown(rows: Rows, skipped: dict[str, str], baselines: list[str]) -> str:
    """Per scheme a table: task × metric rows, one column per baseline (mean ± 95 % half-width
    over folds), and the weights-minus-hyperparameters margin."""
    lines = []
    margin = {(m["task"], m["scheme"], m["metric"]): m["margin"] for m in margins(rows)}
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        part = [r for r in rows if r["scheme"] == scheme]
        folds = max(r["folds"] for r in part)
        lines += [f"**Split `{scheme}`** ({folds} folds)", "",
                  "| task | metric | " + " | ".join(baselines) + " | margin |",
                  "|---|---|" + "---|" * (len(baselines) + 1)]
        for task, metric in dict.fromkeys((r["task"], r["metric"]) for r in part):
            cells = {r["baseline"]: _cell(r, folds) for r in part
                     if (r["task"], r["metric"]) == (task, metric)}
            gap = margin.get((task, scheme, metric))
            lines.append(f"| {task} | {metric} | " + " | ".join(cells.get(b, "–")
                                                               for b in baselines)
                         + f" | {'–' if gap is None else f'{gap:+.3f}'} |")
        lines.append("")
    lines += [f"- not run: {name}: {reason}" for name, reason in sorted(skipped.items())]
    return "\n".join(lines).rstrip() + "\n"


def write_table(rows: Rows, path: Path) -> Path:
    """The rows as one Parquet file, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    write_atomically(path, lambda temporary: pq.write_table(table, temporary))
    return path


def figure(rows: Rows, baselines: list[str], path: Path) -> Path:
    """Bars of each task's primary metric per baseline (95 % intervals), one panel per
    scheme, on a -1 to 1 axis (the table has the scores below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    fig, axes = plt.subplots(1, len(schemes), figsize=(5 * len(schemes), 3.6), squeeze=False)
    for ax, scheme in zip(axes[0], schemes):
        part = [r for r in rows if r["scheme"] == scheme and r["metric"] == PRIMARY[r["kind"]]]
        tasks = list(dict.fromkeys(r["task"] for r in part))
        width = 0.8 / len(baselines)
        for number, baseline in enumerate(baselines):
            found = {r["task"]: r for r in part if r["baseline"] == baseline}
            means = [found[t]["mean"] if t in found else np.nan for t in tasks]
            errors = [found[t]["ci95"] if t in found else np.nan for t in tasks]
            ax.bar(np.arange(len(tasks)) + number * width, means, width, yerr=np.nan_to_num(
                errors), label=baseline, capsize=2)
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=20)
        ax.set_title(f"split {scheme}")
        ax.set_ylabel("R² / balanced accuracy (below −1 cut)")
        ax.set_ylim(-1, 1.05)  # both scores are at most 1; R² far below 0 would hide the rest
        ax.axhline(0, color="black", linewidth=0.5)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    write_atomically(path, lambda temporary: fig.savefig(temporary, format="png", dpi=110))
    plt.close(fig)
    return path
