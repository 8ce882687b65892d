"""The unit of work of a zoo: train every seed of one grid cell, measure it, return table rows."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import torch

from zoo.datasets.base import DataBundle
from zoo.folder.cellresult import CellResult
from zoo.folder.modelshards import INLINE_BYTES, write_models
from zoo.folder.shardbytes import SHARD_BYTES
from zoo.folder.schema import CELL_MEANS
from zoo.folder.zoofolder import ZooFolder
from zoo.layout import Layout, layout_of
from zoo.measure import model_metrics, pairs_metrics
from zoo.objective import Objective
from zoo.rows import cell_row, model_row
from zoo.spec import ModelJob, ZooSpec
from zoo.train import Spool, TrainedModel, build_model, derive_seed, train_cell_models


@dataclass(frozen=True)
class CellOutput:
    """Where a worker writes its cells: the zoo folder (models shards and checkpoint files),
    the spool of checkpoints in progress, the inline limit, whether to add cell HDF5, and
    the bound of each models file.
    A zoo on a store gives both as `StoreFolder`s (the spool: its state/spool prefix)."""

    root: Path | ZooFolder
    spool: Path | ZooFolder
    inline_bytes: int = INLINE_BYTES
    cell_hdf5: bool = True
    shard_bytes: int = SHARD_BYTES


def model_rows(spec: ZooSpec, trained: TrainedModel, layout: Layout,
               fingerprint: str, metrics: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per kept checkpoint; `metrics` maps an epoch to its landscape columns. Rows of
    spooled checkpoints (empty state_dicts) have `weights` None."""
    provenance = {"trained_by": trained.trained_by, "data_fingerprint": fingerprint,
                  "torch_version": torch.__version__, "train_seconds": trained.seconds}
    rows = []
    for checkpoint in trained.checkpoints:
        columns = {f"{split}_{k}": v for split, values in (("train", checkpoint.train),
                                                          ("test", checkpoint.test))
                   for k, v in values.items()}
        columns.update(metrics.get(checkpoint.epoch, {}))
        rows.append(model_row(spec, trained.job, layout, checkpoint.epoch,
                              checkpoint.state_dict, checkpoint.finite, columns, provenance))
    return rows


def _cell_row(spec: ZooSpec, jobs: Sequence[ModelJob], models: list[dict[str, Any]],
              pairs: list[dict[str, Any]], epoch: int, task: str,
              num_classes: int | None) -> dict[str, Any]:
    """Aggregate a cell's models and pairs at `epoch` into its cells-table row, with its phase."""
    at_epoch = [r for r in models if r["epoch"] == epoch]
    values = {name: [r.get(name) for r in (pairs if any(name in p for p in pairs) else at_epoch)]
              for name in CELL_MEANS}
    return cell_row(spec, jobs[0], epoch, [r["finite"] for r in at_epoch], len(pairs), values,
                    task, num_classes, sum(p.get("mc_converged") is True for p in pairs))


def run_cell(spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle,
             device: torch.device | str = "cpu", stacked: bool | None = None) -> CellResult:
    """Train all seeds of one cell on `device` and return its rows. Pure: no Ray, no files.

    `stacked` forces how the seeds train (None: the cost model decides).
    """
    return run_cell_group(spec, [jobs], bundle, device, stacked)[0]


def run_cell_group(spec: ZooSpec, cells: Sequence[Sequence[ModelJob]], bundle: DataBundle,
                   device: torch.device | str = "cpu", stacked: bool | None = None,
                   state_folder: Path | None = None,
                   output: CellOutput | None = None) -> list[CellResult]:
    """Train the seeds of several cells together (one population when stacked), then measure
    each cell. The cells must share width, batch size, data fraction and PDE coefficient.
    `state_folder`: where training states are saved and resumed (zoo.train.state). With
    `output`, checkpoints are spooled as trained and each cell's models shards are written
    into the zoo folder: results hold rows without weights and the shards in `files`."""
    for jobs in cells:
        if len({job.cell_id for job in jobs}) != 1:
            raise ValueError("run_cell_group takes a list of cells, each the jobs of one cell")
    spool = None if output is None else Spool(output.spool)
    trained = train_cell_models(spec, [job for jobs in cells for job in jobs], bundle, device,
                                stacked, state_folder, spool)
    by_cell: dict[str, list[TrainedModel]] = {}
    for member in trained:
        by_cell.setdefault(member.job.cell_id, []).append(member)
    fingerprint = bundle.fingerprint()  # one sha256 over the data for the whole group
    results = [measure_cell(spec, jobs, by_cell[jobs[0].cell_id], bundle, fingerprint, device,
                            output) for jobs in cells]
    for result in results:
        result.stacked = trained[0].trained_by == "stacked"
        result.notes = [note for member in by_cell[result.cell_id] for note in member.notes]
    return results


def measure_cell(spec: ZooSpec, jobs: Sequence[ModelJob], trained: Sequence[TrainedModel],
                 bundle: DataBundle, fingerprint: str, device: torch.device | str,
                 output: CellOutput | None = None) -> CellResult:
    """Landscape metrics of a trained cell's models and seed pairs, as table rows; with
    `output`, spooled checkpoints are read back and the models shards written (`files`)."""
    result = CellResult(cell_id=jobs[0].cell_id)
    layout = layout_of(build_model(spec, jobs[0].cell, bundle, jobs[0].seed),
                       spec.architecture.family, jobs[0].cell.width, spec.architecture.args)
    result.layouts[layout.key] = layout
    data = bundle.subsample(jobs[0].cell.data_fraction).to(device)
    models: dict[tuple[str, int], torch.nn.Module] = {}
    spool = None if output is None else Spool(output.spool)
    keys = [entry.name for entry in layout.entries]  # the state_dict's keys, in its order
    for member in trained:
        metrics = {}
        for checkpoint in member.checkpoints:
            if checkpoint.epoch not in spec.metrics.epochs:
                continue
            metrics[checkpoint.epoch] = {}
            if checkpoint.finite:
                state = checkpoint.state_dict if spool is None else spool.load(
                    member.job.model_id, checkpoint.epoch, keys)
                model = _restore(spec, member.job, data, state)
                models[member.job.model_id, checkpoint.epoch] = model
                objective = Objective(data, beta=member.job.cell.beta)
                metrics[checkpoint.epoch] = model_metrics(
                    model, objective, spec.metrics, derive_seed(member.job.seed, "probe"))
        result.models.extend(model_rows(spec, member, layout, fingerprint, metrics))
    for epoch in spec.metrics.epochs:
        result.pairs.extend(_pair_rows(spec, [m.job for m in trained], epoch, models, data))
    epoch = max(spec.metrics.epochs)  # the cell's phase is taken at the last metric epoch
    at_epoch = [p for p in result.pairs if p["epoch"] == epoch]
    result.cells.append(_cell_row(spec, jobs, result.models, at_epoch, epoch, bundle.info.task,
                                  bundle.info.num_outputs))
    if output is not None:
        _write_models(result, layout, output)
    return result


def _write_models(result: CellResult, layout: Layout, output: CellOutput) -> None:
    """Write the cell's models shards from the spool, one checkpoint in memory at a time; the
    result keeps the rows without weights and lists the files."""
    spool, keys = Spool(output.spool), [entry.name for entry in layout.entries]
    rows = ({**row, "weights": layout.flatten(spool.load(row["model_id"], row["epoch"], keys))}
            for row in result.models)
    result.files, result.models = write_models(
        output.root, result.cell_id, layout, rows, len(result.models),
        cell_hdf5=output.cell_hdf5, inline_bytes=output.inline_bytes,
        shard_bytes=output.shard_bytes, joined=result.cells[0])


def _restore(spec: ZooSpec, job: ModelJob, data: DataBundle,
             state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = build_model(spec, job.cell, data, job.seed)
    model.load_state_dict(state)
    return model.to(next(iter(data.train)).device).eval()


def _pair_rows(spec: ZooSpec, jobs: Sequence[ModelJob], epoch: int,
               models: dict[tuple[str, int], torch.nn.Module],
               data: DataBundle) -> list[dict[str, Any]]:
    """The pairs rows of a cell at `epoch`: every seed pair, measured where both are finite
    (their curves fitted together)."""
    rows, measured = [], []
    for a, b in combinations(jobs, 2):
        rows.append({"cell_id": a.cell_id, "spec_hash": spec.spec_hash(),
                     "model_id_a": a.model_id, "model_id_b": b.model_id, "seed_a": a.seed,
                     "seed_b": b.seed, "epoch": epoch})
        model_a, model_b = models.get((a.model_id, epoch)), models.get((b.model_id, epoch))
        if model_a is not None and model_b is not None:
            seed = derive_seed(a.seed * 1_000_003 + b.seed, "pair")
            measured.append((rows[-1], model_a, model_b, seed))
    if measured:
        metrics = pairs_metrics([(a, b) for _, a, b, _ in measured], data,
                                jobs[0].cell.beta, spec.metrics, [s for *_, s in measured])
        for (row, *_), values in zip(measured, metrics):
            row.update(values)
    return rows
