"""Convert between zoo folders and Ray Tune trial folders (see analysis.trial_folders).

`export_ray_tune(zoo, out)` writes one trial folder per model; `import_ray_tune(src, out)`
describes the trials' grid by a ZooSpec, rebuilds every checkpoint in one of our architectures
(its state_dict names must match, as torchvision-named ResNets do) and writes a zoo folder with
models and cells tables. The published layout has no per-pair rows: an import writes no pairs
table, and its cells' CKA and mc are means of the per-model values in result.json.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from analysis.trial_folders import (LOAD_KEYS, MODULE_LIST, PAIR_MEANS, PARAMS, RESULTS,
                                     SCHEDULERS, STATE, TEMPERATURE_KEYS, Trial,
                                     checkpoint_folder, dump, metric_epochs, published_line,
                                     read_trial_checkpoint, read_trials, result_text)
from loaders.store import META_COLUMNS, read_metadata, read_weights
from zoo import architectures, dataroot, datasets
from zoo.architectures import REGISTRY, families
from zoo.datasets.base import DataInfo
from zoo.errors import ZooError
from zoo.folder.card import write_card
from zoo.folder.cellresult import CellResult
from zoo.folder.reader import ZooReader
from zoo.folder.record import ZooRecord, versions
from zoo.folder.schema import CELL_MEANS
from zoo.folder.writer import ZooWriter
from zoo.folder.zoofolder import ZooFolder
from zoo.layout import Layout, layout_of
from zoo.rows import cell_row, model_row
from zoo.spec import Cell, ModelJob, ZooSpec, load_field
from zoo.specfile import parse_spec
from zoo.train import is_finite_checkpoint


def export_ray_tune(root: str | Path, out: str | Path) -> list[Path]:
    """Write the zoo in `root` as Ray Tune trial folders under `out` (one per model), one
    subfolder per load value (`width_16/`, ...): ModelZooDataset and SANE stack the
    checkpoints of one folder, so each holds one shape. Keys of Sequential families (mlp,
    cnn) get the published `module_list.` prefix.

    Returns:
        the trial folders, in cell then seed order.
    """
    reader, out = ZooReader(root), _empty_folder(out)
    columns = read_metadata(reader)
    metadata = reader.table("models", columns=list(META_COLUMNS)).to_pylist()  # same row order
    pair_means = _pair_means(reader)
    order = np.lexsort((columns["epoch"], columns["seed"], columns["temperature_value"],
                        columns["load_value"]))
    cells: dict[str, dict[str, list[int]]] = {}
    for index in order.tolist():
        models = cells.setdefault(str(columns["cell_id"][index]), {})
        models.setdefault(str(columns["model_id"][index]), []).append(index)
    folders: list[Path] = []
    for models in cells.values():
        chosen = [i for indices in models.values() for i in indices]
        store = read_weights(reader, columns, np.asarray(chosen))  # one read per cell
        states = {i: store.layouts[k].unflatten(store.arrays[k][s])
                  for i, k, s in zip(chosen, store.keys, store.slots)}
        for model_id, indices in models.items():
            trial = f"{load_folder(metadata[indices[0]])}/trial_{len(folders):05d}_{model_id}"
            _write_trial(ZooFolder(out), trial, reader.record.spec,
                         [metadata[i] for i in indices],
                         [published_keys(states[i]) for i in indices], pair_means)
            folder = out / trial
            folders.append(folder)
    return folders


def load_folder(row: dict[str, Any]) -> str:
    """The export subfolder of a model: its load axis and value, e.g. `width_16`."""
    return f"{row['load_axis']}_{row['load_value']:g}"


def published_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published zoos' key names: an nn.Sequential's `<i>.weight` as the
    `module_list.<i>.weight` their nets (and ModelZooDataset's layer lists) use."""
    if all(name[:1].isdigit() for name in state):
        return {f"{MODULE_LIST}{name}": value for name, value in state.items()}
    return state


def _write_trial(out: ZooFolder, trial: str, spec: dict[str, Any],
                 rows: Sequence[dict[str, Any]], states: Sequence[dict[str, torch.Tensor]],
                 pair_means: dict[tuple[str, int], dict[str, float | None]]) -> None:
    """params.json, result.json (a line per epoch) and a checkpoint per stored row, in the
    new folder `trial` of `out` (confined writes: no link on the way)."""
    params = _params(spec, rows[0])
    out.write(f"{trial}/{PARAMS}", dump(params, indent=1).encode())
    measured: dict[int, dict[str, Any]] = {}
    for row, state in zip(rows, states):
        measured[row["epoch"]] = published_line(
            row, pair_means.get((row["model_id"], row["epoch"]), {}))
        owned = {k: v.clone() for k, v in state.items()}  # own storage each
        out.write(f"{trial}/{checkpoint_folder(row['epoch'])}/{STATE}",
                  lambda path, owned=owned: torch.save(owned, path))
    out.write(f"{trial}/{RESULTS}", "".join(
        result_text(line) + "\n"
        for line in result_lines(params, measured, spec["training"]["epochs"])).encode())


def result_lines(params: dict[str, Any], measured: dict[int, dict[str, Any]],
                 epochs: int) -> list[dict[str, Any]]:
    """Ray Tune's result.json lines: one per epoch from 0, `training_iteration` = epoch and
    the trial's `config` on each, and every metric key on every line (null where not
    measured; NaN for the published losses and accuracies, see `result_text`), as
    ModelZooDataset and SANE read them (their offset 1, then 0, both work)."""
    keys = sorted({k for line in measured.values() for k in line})
    return [{**dict.fromkeys(keys), **measured.get(epoch, {}), "epoch": epoch,
             "training_iteration": epoch, "config": params} for epoch in range(epochs + 1)]


def _empty_folder(path: str | Path) -> Path:
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise ZooError(f"{path}: exists and is not empty; choose a new folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pair_means(reader: Any) -> dict[tuple[str, int], dict[str, float | None]]:
    """(model_id, epoch) -> mean over the model's seed pairs of each pair metric."""
    values: dict[tuple[str, int], dict[str, list[float]]] = {}
    for pair in reader.table("pairs").to_pylist():
        for model in (pair["model_id_a"], pair["model_id_b"]):
            slot = values.setdefault((model, pair["epoch"]), {})
            for name in PAIR_MEANS:
                if pair[name] is not None and math.isfinite(pair[name]):
                    slot.setdefault(name, []).append(pair[name])
    return {key: {n: float(np.mean(v)) for n, v in slot.items()} for key, slot in values.items()}


def _params(spec: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The flat config of one model, in the published keys plus phase_zoo:: provenance."""
    training = spec["training"]
    return {"model::type": spec["architecture"]["family"], "model::width": row["width"],
            **{f"model::{k}": v for k, v in spec["architecture"]["args"].items()},
            "dataset::name": spec["data"]["name"], "dataset::args": spec["data"]["args"],
            "dataset::fraction": row["data_fraction"], "dataset::beta": row["beta"],
            "optim::optimizer": training["optimizer"], "optim::lr": row["learning_rate"],
            "optim::wd": row["weight_decay"], "optim::momentum": training["momentum"],
            "optim::scheduler": SCHEDULERS[training["schedule"]],
            "training::batchsize": row["batch_size"], "training::epochs_train":
            training["epochs"], "training::augmentation": training["augmentation"],
            "seed": row["seed"], "phase_zoo::model_id": row["model_id"],
            "phase_zoo::cell_id": row["cell_id"], "phase_zoo::spec_hash": row["spec_hash"],
            "phase_zoo::load_axis": spec["load_axis"]["name"],
            "phase_zoo::temperature_axis": spec["temperature_axis"]["name"],
            "phase_zoo::trained_by": row["trained_by"],
            "phase_zoo::train_seconds": row["train_seconds"],
            "phase_zoo::torch_version": row["torch_version"]}


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote, and the checkpoints its spec names that the trials lack."""
    root: Path
    trials: int
    cells: int
    missing: list[str]


FAMILY_NAMES = {"resnet18_width": "resnet18", "resnet50_width": "resnet50"}  # published types


def _family(trial: Trial, family: str | None) -> str:

    raw = family or str(trial.param("model::type"))
    name = FAMILY_NAMES.get(raw.lower(), raw.lower())
    if name not in REGISTRY:
        raise ZooError(f"{trial.path / PARAMS}: model::type {raw!r} is not an architecture "
                       f"family; pass --family (one of {', '.join(families())})")
    return name


def _axis(trials: Sequence[Trial], keys: dict[str, str], default: str,
          named: str | None) -> tuple[str, list[Any]]:
    """The grid axis among `keys` whose value varies across trials (`named` when the trials
    name it, `default` when none varies; width is called `default` when that is model_dim)."""
    varying = [n for n, k in keys.items() if len({dump(t.params.get(k)) for t in trials}) > 1]
    if len(varying) > 1:
        raise ZooError(f"{trials[0].path.parent}: {' and '.join(varying)} both vary across "
                       f"trials; a zoo grid has one load and one temperature axis")
    name = named or (default if not varying or varying == ["width"] else varying[0])
    key = keys[load_field(name)]
    return name, sorted({t.number(key) for t in trials})


def _recipe(first: Trial) -> dict[str, Any]:
    """The training section of the spec from one trial's config (defaults where absent)."""
    scheduler = str(first.param("optim::scheduler", SCHEDULERS["onecycle"]))
    schedules = {v.lower(): k for k, v in SCHEDULERS.items()}
    if scheduler.lower() not in schedules:
        raise ZooError(f"{first.path / PARAMS}: optim::scheduler {scheduler!r} is not one of "
                       f"{', '.join(SCHEDULERS.values())}")
    return {"optimizer": str(first.param("optim::optimizer", "sgd")).lower(),
            "learning_rate": first.number("optim::lr"),
            "weight_decay": first.number("optim::wd", 0.0),
            "momentum": first.number("optim::momentum", 0.9),
            "schedule": schedules[scheduler.lower()],
            "epochs": first.number("training::epochs_train", max(len(first.results) - 1, 1),
                                    integer=True),
            "augmentation": first.param("training::augmentation", "none")}


def infer_spec(trials: Sequence[Trial], *, name: str, family: str | None = None,
               data: str | None = None, data_root: str | None = None) -> ZooSpec:
    """The ZooSpec that describes the trials' grid, seeds, recipe and kept epochs.

    Config keys the trials lack take Phase Zoo's defaults; the scheduler is OneCycleLR
    unless `optim::scheduler` says otherwise.
    """
    first = trials[0]
    family = _family(first, family)
    data = data or first.param("dataset::name", "")
    if not data:
        raise ZooError(f"{first.path / PARAMS}: no 'dataset::name'; pass --data")
    load, load_values = _axis(trials, LOAD_KEYS, "model_dim" if family == "gpt" else "width",
                              first.params.get("phase_zoo::load_axis"))
    temperature, temperature_values = _axis(trials, TEMPERATURE_KEYS, "batch_size",
                                            first.params.get("phase_zoo::temperature_axis"))
    training = _recipe(first)
    epochs = training["epochs"]
    kept = sorted({e for t in trials for e in t.checkpoints if e <= epochs})
    return parse_spec({
        "name": name, "description": f"Imported from the Ray Tune trials in {first.path.parent}.",
        "architecture": {"family": family, "width": first.number("model::width", integer=True),
                         "args": {k: first.params[f"model::{k}"] for k in REGISTRY[family].args
                                  if f"model::{k}" in first.params}},
        "data": {"name": data, "root": data_root, "args": first.param("dataset::args", {}),
                 "fraction": first.number("dataset::fraction", 1.0),
                 "beta": first.number("dataset::beta", 1.0)},
        "training": training,
        "grid": {"load": {"axis": load, "values": load_values},
                 "temperature": {"axis": temperature, "values": temperature_values}},
        "seeds": sorted({t.number("seed", integer=True) for t in trials}),
        "checkpoints": {"epochs": kept},
        "metrics": {"epochs": [e for e in metric_epochs(trials) if e <= epochs] or ["last"]},
        "phases": {"cka_metric": "cka"},  # the trials carry the published (logit) CKA only
    })


def _fingerprint(spec: ZooSpec) -> str:
    """The data fingerprint that model ids hash, when the data is at hand."""
    if spec.data.root is None and datasets.needs_root(spec.data.name):
        return "unavailable: the data was not loaded at import (pass --data-root)"
    return dataroot.load(spec.data.name, root=spec.data.root, args=spec.data.args).fingerprint()


def _job_of(spec: ZooSpec, jobs: dict[tuple[Any, int], ModelJob], trial: Trial) -> ModelJob:

    base = spec.cells()[0]
    cell = Cell(width=trial.number("model::width", integer=True),
                data_fraction=trial.number("dataset::fraction", base.data_fraction),
                beta=trial.number("dataset::beta", base.beta),
                batch_size=trial.number("training::batchsize", integer=True),
                learning_rate=trial.number("optim::lr"),
                weight_decay=trial.number("optim::wd", base.weight_decay))
    job = jobs.get((cell, trial.number("seed", integer=True)))
    if job is None:
        raise ZooError(f"{trial.path / PARAMS}: its config ({cell}) is not a cell of the grid "
                       f"the other trials span")
    return job


def _check_state(path: Path, state: dict[str, torch.Tensor], layout: Layout) -> None:
    expected = {e.name: e.shape for e in layout.entries}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        missing = sorted(set(expected) - set(found))[:4]
        extra = sorted(set(found) - set(expected))[:4]
        shapes = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])[:4]
        raise ZooError(f"{path}: does not match {layout.family} width {layout.width} "
                       f"(missing {missing}, unexpected {extra}, other shapes {shapes}); "
                       f"check --family and the trial's model::width")


def _model_rows(spec: ZooSpec, job: ModelJob, trial: Trial, layout: Layout, fingerprint: str,
                missing: list[str]) -> list[dict[str, Any]]:
    """One models-table row per kept epoch whose checkpoint the trial holds."""
    rows = []
    for epoch in spec.kept_epochs:
        if epoch not in trial.checkpoints:
            missing.append(f"{trial.path / checkpoint_folder(epoch)}")
            continue
        state = read_trial_checkpoint(trial.checkpoints[epoch])
        _check_state(trial.checkpoints[epoch], state, layout)
        metrics = {k: v for k, v in trial.metrics(epoch).items() if not k.startswith("pair:")}
        evaluation = {k: metrics.get(k) for k in ("train_loss", "test_loss")}
        provenance = {"data_fingerprint": fingerprint,
                      "trained_by": trial.params.get("phase_zoo::trained_by"),
                      "torch_version": trial.params.get("phase_zoo::torch_version"),
                      "train_seconds": trial.params.get("phase_zoo::train_seconds")}
        rows.append(model_row(spec, job, layout, epoch, state,
                              is_finite_checkpoint(state, [evaluation]), metrics, provenance))
    return rows


def _cell_row(spec: ZooSpec, members: Sequence[tuple[ModelJob, Trial]], task: str,
              num_classes: int | None = None) -> dict:
    """The cells-table row from the members' result lines at the last metric epoch (curves
    unknown: never confident)."""
    epoch = max(spec.metrics.epochs)
    records = [trial.metrics(epoch) for _, trial in members]
    finite = [r.get("train_loss") is not None and math.isfinite(r["train_loss"]) for r in records]
    values = {name: [r.get(f"pair:{name}" if name in PAIR_MEANS else name) for r in records]
              for name in CELL_MEANS}
    return cell_row(spec, members[0][0], epoch, finite, 0, values, task, num_classes)


def _cell_result(spec: ZooSpec, members: Sequence[tuple[ModelJob, Trial]], info: DataInfo,
                 fingerprint: str, missing: list[str]) -> CellResult:

    job = members[0][0]
    with torch.device("meta"):  # only names, shapes and dtypes are needed
        model = architectures.build(spec.architecture.family, width=job.cell.width, info=info,
                                    args=spec.architecture.args)
    layout = layout_of(model, spec.architecture.family, job.cell.width, spec.architecture.args)
    rows = [row for job, trial in members
            for row in _model_rows(spec, job, trial, layout, fingerprint, missing)]
    cells = [_cell_row(spec, members, info.task, info.num_outputs)]
    return CellResult(job.cell_id, models=rows, cells=cells, layouts={layout.key: layout})


def import_ray_tune(source: str | Path, out: str | Path, *, family: str | None = None,
                    data: str | None = None, data_root: str | None = None,
                    name: str | None = None) -> ImportReport:
    """Convert the Ray Tune trial folders under `source` into a new zoo folder `out`.

    Args:
        family: architecture family (default: from model::type, e.g. Resnet18_width).
        data: data set name (default: dataset::name).
        data_root: folder of a local data set; recorded in the spec, used for the fingerprint.
        name: zoo name (default: the source folder's name).
    """
    trials = read_trials(Path(source))
    folder = _empty_folder(out)
    zoo_name = name or re.sub(r"[^A-Za-z0-9_-]+", "-", Path(source).resolve().name) or "imported"
    spec = infer_spec(trials, name=zoo_name, family=family, data=data, data_root=data_root)
    fingerprint = _fingerprint(spec)
    jobs = {(j.cell, j.seed): j for j in spec.jobs(fingerprint)}
    cells: dict[str, list[tuple[ModelJob, Trial]]] = {}
    for trial in trials:
        job = _job_of(spec, jobs, trial)
        if any(j.model_id == job.model_id for j, _ in cells.get(job.cell_id, [])):
            raise ZooError(f"{trial.path}: a second trial of cell {job.cell} seed {job.seed}")
        cells.setdefault(job.cell_id, []).append((job, trial))
    zoo = ZooFolder(folder)
    writer = ZooWriter(zoo, spec.spec_hash())
    info = datasets.describe(spec.data.name, spec.data.args)
    writer.start(ZooRecord(spec.to_dict(), spec.spec_hash(), fingerprint, versions(), info,
                           {"format": "ray-tune", "source": str(Path(source).resolve()),
                            "trials": len(trials)}))
    missing: list[str] = []
    for members in cells.values():
        members.sort(key=lambda member: member[0].seed)
        writer.commit(_cell_result(spec, members, info, fingerprint, missing))
    write_card(zoo)
    return ImportReport(folder, len(trials), len(cells), missing)
