"""The unit of work of a zoo: train every seed of one grid cell, measure it, return table rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

import zoo
from zoo.datasets.base import DataBundle
from zoo.layout import Layout, layout_of
from zoo.spec import Cell, ModelJob, ZooSpec
from zoo.training import TrainedModel, build_model, train_model


@dataclass
class CellResult:
    """Rows for the models, pairs and cells tables, and the layouts the model rows refer to."""

    cell_id: str
    models: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)
    layouts: dict[str, Layout] = field(default_factory=dict)


def identity_columns(spec: ZooSpec, cell: Cell, cell_id: str) -> dict[str, Any]:
    """Columns shared by every table's rows of one cell."""
    load_field = "width" if spec.load.name == "model_dim" else spec.load.name
    temperature_field = spec.temperature.name
    return {
        "cell_id": cell_id, "spec_hash": spec.spec_hash(), "zoo": spec.name,
        "architecture": spec.architecture.family, "data": spec.data.name,
        "load_axis": spec.load.name, "load_value": float(getattr(cell, load_field)),
        "temperature_axis": temperature_field,
        "temperature_value": float(getattr(cell, temperature_field)),
        **asdict(cell),
    }


def model_rows(spec: ZooSpec, trained: TrainedModel, layout: Layout,
               fingerprint: str, metrics: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per kept checkpoint; `metrics` maps an epoch to its landscape columns."""
    job = trained.job
    base = {
        "model_id": job.model_id, **identity_columns(spec, job.cell, job.cell_id),
        "seed": job.seed, "trained_by": trained.trained_by, "num_params": layout.size,
        "layout": layout.key, "data_fingerprint": fingerprint,
        "code_version": zoo.__version__, "torch_version": torch.__version__,
        "train_seconds": trained.seconds,
    }
    rows = []
    for checkpoint in trained.checkpoints:
        row = dict(base, epoch=checkpoint.epoch, finite=checkpoint.finite,
                   is_metric_epoch=checkpoint.epoch in metrics,
                   weights=layout.flatten(checkpoint.state_dict))
        for split, values in (("train", checkpoint.train), ("test", checkpoint.test)):
            row.update({f"{split}_{k}": v for k, v in values.items()})
        row.update(metrics.get(checkpoint.epoch, {}))
        rows.append(row)
    return rows


def summarise(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and standard deviation of the finite values, or (None, None) when there are none."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if finite.size == 0:
        return None, None
    return float(finite.mean()), float(finite.std())


def cell_row(spec: ZooSpec, jobs: Sequence[ModelJob], models: list[dict[str, Any]],
             pairs: list[dict[str, Any]], epoch: int) -> dict[str, Any]:
    """Aggregate a cell's models and pairs at `epoch` into its cells-table row."""
    from zoo.schema import CELL_MEANS

    at_epoch = [r for r in models if r["epoch"] == epoch]
    row = {**identity_columns(spec, jobs[0].cell, jobs[0].cell_id), "metric_epoch": epoch,
           "num_models": len(at_epoch), "num_pairs": len(pairs),
           "finite_fraction": float(np.mean([r["finite"] for r in at_epoch]))}
    for name in CELL_MEANS:
        source = pairs if any(name in p for p in pairs) else at_epoch
        mean, std = summarise([r.get(name) for r in source])
        row[f"{name}_mean"], row[f"{name}_std"] = mean, std
    return row


def run_cell(spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle) -> CellResult:
    """Train all seeds of one cell and return its rows. Pure: no Ray, no files."""
    cell_ids = {job.cell_id for job in jobs}
    if len(cell_ids) != 1:
        raise ValueError(f"run_cell takes the jobs of one cell, got cells {sorted(cell_ids)}")
    fingerprint = bundle.fingerprint()
    result = CellResult(cell_id=jobs[0].cell_id)
    layout = layout_of(build_model(spec, jobs[0].cell, bundle, jobs[0].seed),
                       spec.architecture.family, jobs[0].cell.width, spec.architecture.args)
    result.layouts[layout.key] = layout
    metric_epoch = max(spec.metrics.epochs)
    for job in jobs:
        trained = train_model(spec, job, bundle)
        result.models.extend(model_rows(spec, trained, layout, fingerprint,
                                        {e: {} for e in spec.metrics.epochs}))
    result.cells.append(cell_row(spec, jobs, result.models, result.pairs, metric_epoch))
    return result
