"""Do confident phase labels survive more curve budget? Refit a zoo's curves, relabel its cells.

    python -m benchmarks.curve_budget ZOO [--scale 4] [--cells 128:16,512:64]
    python -m benchmarks.curve_budget ZOO --history --learning-rate 0.2 --rounds 4

Reads the stored models of a generated zoo (no retraining: one model id, one set of weights)
and refits every seed pair's Bezier curve as generation does (same pair seeds, all pairs of a
cell stacked), with `metrics.curve` changed: `--scale` multiplies the steps of a round,
`--learning-rate` replaces the curve's learning rate. The default report relabels each cell
with the refitted mc, projected mc and converged pairs (every other mean as stored) and
counts the confident labels and the confident labels that differ from the stored ones.
Each cell's mc after every round (`curve_mc_history`, per pair) is printed as it finishes;
`--history` fits `--rounds` rounds whatever the drift, to compare optimiser settings against
a long reference, and skips the relabelling.
At --scale 1 with the stored settings the refitted pairs equal the stored ones bit for bit.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from zoo.folder.reader import ZooReader
from zoo.phases import cell_phase, thresholds_for


def refit(root: Path, cells: list[str] | None, **curve: Any) -> dict[str, list[dict[str, Any]]]:
    """`width:batch` -> the curve columns of the cell's seed pairs, refitted with `curve` (the
    zoo's CurveSpec fields to change); every cell, or only `cells`."""
    from loaders.models import load_model
    from zoo import datasets
    from zoo.measure import curves_columns
    from zoo.objective import Objective
    from zoo.phases import default_thresholds
    from zoo.specfile import spec_from_dict
    from zoo.train import derive_seed

    reader = ZooReader(root)
    spec = spec_from_dict(reader.record.spec)
    settings = replace(spec.metrics, curve=replace(spec.metrics.curve, **curve))
    bundle = datasets.load(spec.data.name, root=spec.data.root, args=spec.data.args)
    tolerance = default_thresholds(bundle.info.task).mc / 2
    models = reader.table("models", columns=["cell_id", "model_id", "seed", "epoch"]).to_pylist()
    out = {}
    for cell in _cells(reader):
        key = _key(cell)
        if cells is not None and key not in cells:
            continue
        epoch = cell["metric_epoch"]
        seeds = sorted({(r["seed"], r["model_id"]) for r in models
                        if r["cell_id"] == cell["cell_id"] and r["epoch"] == epoch})
        nets = {s: load_model(root, m, epoch) for s, m in seeds}
        pairs = list(combinations(sorted(nets), 2))
        out[key] = pairs = curves_columns([(nets[a], nets[b]) for a, b in pairs],
                                  Objective(bundle, beta=cell["beta"]), settings,
                                  [derive_seed(a * 1_000_003 + b, "pair") for a, b in pairs],
                                  tolerance)
        print(key, json.dumps([[round(v, 3) for v in p["curve_mc_history"]] for p in pairs]),
              flush=True)  # a long refit shows its cells as they finish
    return out


def relabel_table(root: Path, refitted: dict[str, list[dict[str, Any]]]) -> str:
    """Per cell: the stored label and the label from the refitted curves; then the counts."""
    reader = ZooReader(root)
    info = reader.record.data_info
    thresholds = thresholds_for(info.task, info.num_outputs, reader.record.spec.get("phases", {}))
    lines = ["| width:batch | stored | mc stored | refitted | mc refitted (projected) | "
             "converged |", "|---|---|---|---|---|---|"]
    confident = differ = 0
    for cell in _cells(reader):
        pairs = refitted.get(_key(cell))
        if pairs is None:
            continue
        old = cell_phase(cell, info.task, thresholds)
        new_row = dict(cell, num_pairs_converged=sum(p["mc_converged"] for p in pairs))
        mc = [p["mc_train_error"] for p in pairs]
        new_row["mc_train_error_mean"], new_row["mc_train_error_std"] = np.mean(mc), np.std(mc)
        new_row["mc_projected_mean"] = float(np.mean([p["mc_projected"] for p in pairs]))
        new = cell_phase(new_row, info.task, thresholds)
        confident += bool(old[1])
        differ += bool(old[1]) and new[0] != old[0]
        lines.append(f"| {_key(cell)} | {_label(old)} | {cell['mc_train_error_mean']:.2f} | "
                     f"{_label(new)} | {new_row['mc_train_error_mean']:.2f} "
                     f"({new_row['mc_projected_mean']:.2f}) | "
                     f"{new_row['num_pairs_converged']}/{len(pairs)} |")
    lines.append(f"\nconfident stored: {confident}/{len(lines) - 2}; of those, different after "
                 f"the refit: {differ}")
    return "\n".join(lines)


def _cells(reader: ZooReader) -> list[dict[str, Any]]:
    return sorted(reader.table("cells").to_pylist(),
                  key=lambda r: (r["load_value"], r["temperature_value"]))


def _key(cell: dict[str, Any]) -> str:
    return f"{cell['load_value']:g}:{cell['temperature_value']:g}"


def _label(result: tuple[str | None, bool | None]) -> str:
    phase, confident = result
    return "-" if phase is None else phase + ("" if confident else "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", type=Path, help="a generated zoo folder")
    parser.add_argument("--scale", type=int, default=1, help="multiply a round's curve steps")
    parser.add_argument("--learning-rate", type=float, help="the curve's learning rate")
    parser.add_argument("--cells", help="only these cells, as width:batch,... (load:temperature)")
    parser.add_argument("--history", action="store_true",
                        help="fit --rounds rounds whatever the drift; print mc per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds fitted with --history")
    args = parser.parse_args()
    stored = ZooReader(args.zoo).record.spec["metrics"]["curve"]
    if stored["steps"] is None:
        parser.error("the zoo's curve rounds are set in epochs; --scale needs metrics.curve.steps")
    curve: dict[str, Any] = {"steps": stored["steps"] * args.scale}
    if args.learning_rate is not None:
        curve["learning_rate"] = args.learning_rate
    if args.history:
        curve.update(max_rounds=args.rounds, tolerance=1e-12)
    cells = args.cells.split(",") if args.cells else None
    start = time.process_time()
    refitted = refit(args.zoo, cells, **curve)
    print(f"refitted {curve} in {time.process_time() - start:.0f} s of CPU")
    if not args.history:
        print(relabel_table(args.zoo, refitted))


if __name__ == "__main__":
    main()
