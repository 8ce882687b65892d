"""Which phase labels move with the curve budget and the CKA convention (DATASET_CARD.md).

    python -m benchmarks.label_budget --out /tmp/label-budget [--workers 1]

Generates a reduced mnist1d reference zoo (the demo grid: widths 16, 128, 512 × batch sizes
16, 64, 512; 3 seeds, 60 epochs), its curves fitted in rounds of 10 mnist1d epochs (320
steps, PTMZ's budget) until mc changes by less than 1 point (at most 8 rounds), then labels
every cell four ways from the stored numbers: mc after the first round or at the end of the
fit, and CKA of logits on test data (`cka`) or Yang et al.'s mixup softmax CKA (`cka_mixup`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from zoo.phases import cell_phase, default_thresholds
from zoo.specfile import load_spec, parse_spec

SEEDS = [0, 1, 2]
CURVE = {"batch_size": 128, "tolerance": 1.0, "max_rounds": 8}  # rounds of 10 epochs


def study_spec() -> Any:
    """The demo spec with 3 seeds and convergent curves."""
    raw = load_spec("demo").to_dict()
    body = {"name": "label-budget", "description": "Reduced mnist1d reference zoo: labels vs "
            "curve budget and CKA convention.", "architecture": raw["architecture"],
            "data": raw["data"], "training": raw["training"],
            "grid": {axis: {"axis": raw[axis]["name"], "values": raw[axis]["values"]}
                     for axis in ("load", "temperature")},
            "seeds": SEEDS, "checkpoints": {"every": 60},
            "metrics": {"epochs": ["last"], "curve": CURVE}}
    return parse_spec(body)


def variant(cell: dict[str, Any], pairs: list[dict[str, Any]], first_round: bool,
            cka: str) -> dict[str, Any]:
    """The cell row as if mc were taken after the first round only and CKA were `cka`."""
    row = dict(cell)
    if first_round:
        values = [p["curve_mc_history"][0] for p in pairs if p.get("curve_mc_history")]
        row["mc_train_error_mean"] = float(np.mean(values)) if values else None
        row["mc_train_error_std"] = float(np.std(values)) if values else None
        row["num_pairs_converged"] = 0  # one round shows no convergence
    row["cka_mean"], row["cka_std"] = cell[f"{cka}_mean"], cell[f"{cka}_std"]
    return row


def label_table(root: Path) -> str:
    """Markdown table: per cell, mc at both budgets, both CKAs and the four labels."""
    from zoo.folder.reader import ZooReader

    reader = ZooReader(root)
    cells = sorted(reader.table("cells").to_pylist(),
                   key=lambda r: (r["load_value"], r["temperature_value"]))
    pairs = reader.table("pairs").to_pylist()
    thresholds = default_thresholds("classification", 10)
    lines = ["| width | batch | train loss | mc 1 round | mc end (rounds) | converged | CKA "
             "logits | CKA mixup | 1 round, logits | 1 round, mixup | end, logits | end, "
             "mixup |", "|" + "---|" * 12]
    for cell in cells:
        own = [p for p in pairs if p["cell_id"] == cell["cell_id"]]
        labels = []
        for first in (True, False):
            for cka in ("cka", "cka_mixup"):
                phase, confident = cell_phase(variant(cell, own, first, cka), "classification",
                                              thresholds)
                labels.append("-" if phase is None else phase + ("" if confident else "?"))
        first_mc = variant(cell, own, True, "cka")["mc_train_error_mean"]
        rounds = "/".join(str(p["curve_rounds"]) for p in own)
        lines.append(
            f"| {cell['width']} | {cell['batch_size']} | {cell['train_loss_mean']:.3f} | "
            f"{first_mc:.1f} | {cell['mc_train_error_mean']:.1f} ({rounds}) | "
            f"{cell['num_pairs_converged']}/{cell['num_pairs']} | {cell['cka_mean']:.3f} | "
            f"{cell['cka_mixup_mean']:.3f} | " + " | ".join(labels) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="zoo folder to write or read")
    parser.add_argument("--workers", type=int, default=1, help="cells trained at once")
    args = parser.parse_args()
    from generators.generate import generate

    start = time.perf_counter()
    generate(study_spec(), args.out, workers=args.workers, progress=False)
    print(f"generated in {time.perf_counter() - start:.0f} s")
    print(label_table(args.out))


if __name__ == "__main__":
    main()
