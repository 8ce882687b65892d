"""Rows of the zoo tables (models, pairs, cells).

One home for what generation (`zoo.cell`) and import (`analysis.interop`) both write, so a
generated and an imported zoo hold the same columns under the same rules.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import zoo
from zoo.folder.schema import CELL_MEANS
from zoo.layout import Layout
from zoo.phases import phase_columns
from zoo.spec import Cell, ModelJob, ZooSpec, load_field


def identity_columns(spec: ZooSpec, cell: Cell, cell_id: str) -> dict[str, Any]:
    """Columns shared by every table's rows of one cell."""
    load = load_field(spec.load_axis.name)
    temperature = spec.temperature_axis.name
    return {
        "cell_id": cell_id, "spec_hash": spec.spec_hash(), "zoo": spec.name,
        "architecture": spec.architecture.family, "data": spec.data.name,
        "load_axis": spec.load_axis.name, "load_value": float(getattr(cell, load)),
        "temperature_axis": temperature, "temperature_value": float(getattr(cell, temperature)),
        **asdict(cell),
    }


def model_row(spec: ZooSpec, job: ModelJob, layout: Layout, epoch: int, state: Mapping[str,
              torch.Tensor], finite: bool, columns: Mapping[str, Any],
              provenance: Mapping[str, Any]) -> dict[str, Any]:
    """One models-table row: identity, the checkpoint's flat weights (None for an empty
    `state`: the weights are written later, from a spool), `columns` (evaluation
    and landscape metrics) and `provenance` (fingerprint, trained_by, versions, seconds)."""
    return {"model_id": job.model_id, **identity_columns(spec, job.cell, job.cell_id),
            "seed": job.seed, "epoch": epoch, "is_metric_epoch": epoch in spec.metrics.epochs,
            "finite": finite, "num_params": layout.size, "layout": layout.key,
            "weights": layout.flatten(dict(state)) if state else None,
            "code_version": zoo.__version__,
            **provenance, **columns}


def summarise(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and standard deviation of the finite values, or (None, None) when there are none."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if finite.size == 0:
        return None, None
    return float(finite.mean()), float(finite.std())


def cell_row(spec: ZooSpec, job: ModelJob, epoch: int, finite: Sequence[bool], num_pairs: int,
             values: Mapping[str, Sequence[float | None]], task: str,
             num_classes: int | None = None, num_pairs_converged: int = 0) -> dict[str, Any]:
    """A cell's cells-table row at its metric `epoch`, with its phase.

    Args:
        job: any job of the cell (for its identity columns).
        finite: per model, whether its checkpoint at `epoch` is finite.
        num_pairs: seed pairs measured (0 for an imported zoo).
        values: for each name of CELL_MEANS, the per-model or per-pair values to average.
        task: the data set's task (a PINN's phase is read from its train error).
        num_classes: the data set's classes (the default high-loss threshold scales by ln C).
        num_pairs_converged: seed pairs whose curve fit converged (decides the confidence).
    """
    row: dict[str, Any] = {**identity_columns(spec, job.cell, job.cell_id),
                           "metric_epoch": epoch, "num_models": len(finite),
                           "num_pairs": num_pairs, "num_pairs_converged": num_pairs_converged,
                           "finite_fraction": float(np.mean(finite))}
    for name in CELL_MEANS:
        row[f"{name}_mean"], row[f"{name}_std"] = summarise(values.get(name, ()))
    projected = [v for v in values.get("mc_projected", ()) if v is not None]
    if projected:  # an unbounded drift (±inf) must reach the mean, not be left out of it
        with np.errstate(invalid="ignore"):
            row["mc_projected_mean"] = float(np.mean(projected))
    row.update(phase_columns(row, task, num_classes, spec.phases))
    return row
