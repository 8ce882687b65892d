"""The unit of work of a zoo: train every seed of one grid cell, measure it, return table rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any, Sequence

import numpy as np
import torch

import zoo
from zoo.datasets.base import DataBundle
from zoo.layout import Layout, layout_of
from zoo.measure import model_metrics, pair_metrics
from zoo.phases import phase_columns
from zoo.schema import CELL_MEANS
from zoo.spec import Cell, ModelJob, ZooSpec
from zoo.tasks import Objective
from zoo.population import train_cell_models
from zoo.training import Checkpoint, TrainedModel, build_model, derive_seed


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
             pairs: list[dict[str, Any]], epoch: int, task: str,
             num_classes: int | None = None) -> dict[str, Any]:
    """Aggregate a cell's models and pairs at `epoch` into its cells-table row, with its phase."""
    at_epoch = [r for r in models if r["epoch"] == epoch]
    row = {**identity_columns(spec, jobs[0].cell, jobs[0].cell_id), "metric_epoch": epoch,
           "num_models": len(at_epoch), "num_pairs": len(pairs),
           "finite_fraction": float(np.mean([r["finite"] for r in at_epoch]))}
    for name in CELL_MEANS:
        source = pairs if any(name in p for p in pairs) else at_epoch
        mean, std = summarise([r.get(name) for r in source])
        row[f"{name}_mean"], row[f"{name}_std"] = mean, std
    row["num_pairs_converged"] = sum(p.get("mc_converged") is True for p in pairs)
    row.update(phase_columns(row, task, num_classes, spec.phases))
    return row


def run_cell(spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle,
             device: torch.device | str = "cpu", stacked: bool | None = None) -> CellResult:
    """Train all seeds of one cell on `device` and return its rows. Pure: no Ray, no files.

    `stacked` forces how the seeds train (None: the cost model decides).
    """
    return run_cell_group(spec, [jobs], bundle, device, stacked)[0]


def run_cell_group(spec: ZooSpec, cells: Sequence[Sequence[ModelJob]], bundle: DataBundle,
                   device: torch.device | str = "cpu",
                   stacked: bool | None = None) -> list[CellResult]:
    """Train the seeds of several cells together (one population when stacked), then measure
    each cell. The cells must share width, batch size, data fraction and PDE coefficient."""
    for jobs in cells:
        if len({job.cell_id for job in jobs}) != 1:
            raise ValueError("run_cell_group takes a list of cells, each the jobs of one cell")
    trained = train_cell_models(spec, [job for jobs in cells for job in jobs], bundle, device,
                                stacked)
    by_cell: dict[str, list[TrainedModel]] = {}
    for member in trained:
        by_cell.setdefault(member.job.cell_id, []).append(member)
    fingerprint = bundle.fingerprint()  # one sha256 over the data for the whole group
    return [measure_cell(spec, jobs, by_cell[jobs[0].cell_id], bundle, fingerprint, device)
            for jobs in cells]


def measure_cell(spec: ZooSpec, jobs: Sequence[ModelJob], trained: Sequence[TrainedModel],
                 bundle: DataBundle, fingerprint: str,
                 device: torch.device | str) -> CellResult:
    """Landscape metrics of a trained cell's models and seed pairs, as table rows."""
    result = CellResult(cell_id=jobs[0].cell_id)
    layout = layout_of(build_model(spec, jobs[0].cell, bundle, jobs[0].seed),
                       spec.architecture.family, jobs[0].cell.width, spec.architecture.args)
    result.layouts[layout.key] = layout
    data = bundle.subsample(jobs[0].cell.data_fraction).to(device)
    models: dict[tuple[str, int], torch.nn.Module] = {}
    for member in trained:
        metrics = {}
        for checkpoint in member.checkpoints:
            if checkpoint.epoch not in spec.metrics.epochs:
                continue
            metrics[checkpoint.epoch] = {}
            if checkpoint.finite:
                model = _restore(spec, member.job, data, checkpoint)
                models[member.job.model_id, checkpoint.epoch] = model
                objective = Objective(data, beta=member.job.cell.beta)
                metrics[checkpoint.epoch] = model_metrics(
                    model, objective, spec.metrics, derive_seed(member.job.seed, "probe"))
        result.models.extend(model_rows(spec, member, layout, fingerprint, metrics))
    for epoch in spec.metrics.epochs:
        for a, b in combinations([m.job for m in trained], 2):
            result.pairs.append(_pair_row(spec, a, b, epoch, models, data))
    epoch = max(spec.metrics.epochs)  # the cell's phase is taken at the last metric epoch
    at_epoch = [p for p in result.pairs if p["epoch"] == epoch]
    result.cells.append(cell_row(spec, jobs, result.models, at_epoch, epoch, bundle.info.task,
                                 bundle.info.num_outputs))
    return result


def _restore(spec: ZooSpec, job: ModelJob, data: DataBundle,
             checkpoint: Checkpoint) -> torch.nn.Module:
    model = build_model(spec, job.cell, data, job.seed)
    model.load_state_dict(checkpoint.state_dict)
    return model.to(next(iter(data.train)).device).eval()


def _pair_row(spec: ZooSpec, a: ModelJob, b: ModelJob, epoch: int,
              models: dict[tuple[str, int], torch.nn.Module], data: DataBundle) -> dict[str, Any]:
    row = {"cell_id": a.cell_id, "spec_hash": spec.spec_hash(), "model_id_a": a.model_id,
           "model_id_b": b.model_id, "seed_a": a.seed, "seed_b": b.seed, "epoch": epoch}
    model_a, model_b = models.get((a.model_id, epoch)), models.get((b.model_id, epoch))
    if model_a is not None and model_b is not None:
        seed = derive_seed(a.seed * 1_000_003 + b.seed, "pair")
        row.update(pair_metrics(model_a, model_b, data, a.cell.beta, spec.metrics, seed))
    return row
