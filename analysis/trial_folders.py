"""The Ray Tune trial-folder layout (read and written without Ray) of the published zoos.

One folder per model: `params.json` (flat config: `model::width`, `training::batchsize`,
`optim::lr`, `optim::wd`, `seed`, ...), `result.json` (JSON lines, line i = epoch i with
`training_iteration` i and the `config`; landscape metrics only on metric-epoch lines) and
`checkpoint_{epoch:06d}/checkpoints` (a torch.save'd state_dict, keys possibly prefixed
`module.`). Checkpoints are only ever read with
`torch.load(..., weights_only=True)`. Export writes the published keys and, beside them, Phase
Zoo's own column names with exact values; import prefers those when present.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from zoo.errors import ZooError, ZooFolderError
from zoo.folder.names import open_regular, read_bounded
from zoo.limits import short_repr
from zoo.folder.schema import CELL_MEANS, EVALUATION, HESSIAN, PAIR_COLUMNS

PARAMS, RESULTS, STATE = "params.json", "result.json", "checkpoints"
PREFIX = "module."  # added by nn.DataParallel / DistributedDataParallel
MODULE_LIST = "module_list."  # the published nets' Sequential container (ModelZooDataset)
NUMBERS = ("train_loss", "test_loss", "train_acc", "test_acc")  # NaN, never null (see below)
LOAD_KEYS = {"width": "model::width", "data_fraction": "dataset::fraction",
             "beta": "dataset::beta"}
TEMPERATURE_KEYS = {"batch_size": "training::batchsize", "learning_rate": "optim::lr",
                    "weight_decay": "optim::wd"}
SCHEDULERS = {"onecycle": "OneCycleLR", "cosine": "CosineAnnealingLR", "constant": "constant"}
PUBLISHED = {"train_acc": "train_accuracy", "test_acc": "test_accuracy"}
LOGS = {"log_hessian_top_ev": "hessian_top_eigenvalue_train",
        "log_hessian_trace": "hessian_trace_train",
        "log_hessian_top_ev_train": "hessian_top_eigenvalue_train",
        "log_hessian_trace_train": "hessian_trace_train",
        "log_hessian_top_ev_test": "hessian_top_eigenvalue_test",
        "log_hessian_trace_test": "hessian_trace_test",
        "log_hessian_top_ev_val": "hessian_top_eigenvalue_test",
        "log_hessian_trace_val": "hessian_trace_test"}
PAIR_MEANS = tuple(n for n in CELL_MEANS if n in {c.name for c in PAIR_COLUMNS})
CURVES = {"representation_similarity": "cka", "curve_mc_train_error": "mc_train_error",
          "curve_mc_test_error": "mc_test_error", "curve_mc_train_loss": "mc_train_loss",
          "curve_mc_test_loss": "mc_test_loss"}
OWN = (*(c.name for c in EVALUATION), *(c.name for c in HESSIAN), "heavy_tail_alpha",
       "heavy_tail_alphas", "heavy_tail_min_eigenvalues")  # exported under their own names


def checkpoint_folder(epoch: int) -> str:
    return f"checkpoint_{epoch:06d}"


@dataclass(frozen=True)
class Trial:
    """One Ray Tune trial folder: its config, result lines and checkpoint files by epoch."""

    path: Path
    params: dict[str, Any]
    results: list[dict[str, Any]]
    checkpoints: dict[int, Path] = field(default_factory=dict)

    def param(self, key: str, default: Any = None) -> Any:
        """A config value; ZooError naming params.json when it is required and missing."""
        if key not in self.params and default is None:
            raise ZooError(f"{self.path / PARAMS}: no {key!r}; the import needs it")
        return self.params.get(key, default)

    def number(self, key: str, default: Any = None, *, integer: bool = False) -> Any:
        """A config value that must be a finite number (an integer of at most 2**53 when
        `integer`); a ZooError naming params.json and the key otherwise."""
        value = self.param(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value) and (not integer or (float(value).is_integer() and
                                      abs(value) <= 2**53))
        if not ok:
            raise ZooError(f"{self.path / PARAMS}: {key} is {short_repr(value)}; expected "
                           f"{'an integer' if integer else 'a finite number'}")
        return int(value) if integer else value

    def metrics(self, epoch: int) -> dict[str, Any]:
        """Our column names -> values from result line `epoch` (empty past the last line)."""
        return translate(self.results[epoch]) if epoch < len(self.results) else {}


MAX_TRIAL_FILE = 64 << 20  # bytes of one params.json or result.json


def _read_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ZooError(f"{path}: not valid JSON ({short_repr(str(error), 120)})") from None


def _read_text(path: Path) -> str:
    """A trial file's text: a regular file (never a link or a FIFO), at most MAX_TRIAL_FILE."""
    data = read_bounded(path, "trial file", MAX_TRIAL_FILE)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ZooError(f"{path}: byte {error.start} is not UTF-8; expected JSON text") from None


def _check_line(path: Path, number: int, line: Any) -> dict[str, Any]:
    """A result line: a JSON object whose metric values are numbers or null (lists of them
    for heavy_tail_alphas)."""
    if not isinstance(line, dict):
        raise ZooError(f"{path}: line {number + 1} is {short_repr(line)}; expected a JSON object")
    metrics = {"train_loss", "test_loss", *PUBLISHED, *LOGS, *CURVES, *PAIR_MEANS, *OWN}
    for key in metrics & set(line):
        values = line[key] if key == "heavy_tail_alphas" and isinstance(line[key], list) \
            else [line[key]]
        if not all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool)
                   for v in values):
            raise ZooError(f"{path}: line {number + 1}: {key} is {short_repr(line[key])}; "
                           f"expected a number or null")
    return line


def read_trial(folder: Path) -> Trial:
    """Read params.json, result.json and the checkpoint paths of one trial folder; links,
    FIFOs and other non-regular files are refused, never followed or opened."""
    params = _read_json(folder / PARAMS, _read_text(folder / PARAMS))
    if not isinstance(params, dict):
        raise ZooError(f"{folder / PARAMS}: expected a JSON object of config keys")
    results_path = folder / RESULTS
    exists = results_path.exists() or results_path.is_symlink()
    lines = _read_text(results_path).splitlines() if exists else []
    results = [_check_line(results_path, i, _read_json(results_path, line))
               for i, line in enumerate(lines) if line.strip()]
    checkpoints = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        suffix = entry.name.removeprefix("checkpoint_")
        if entry.name.startswith("checkpoint_") and suffix.isdigit() and len(suffix) < 10:
            if entry.is_symlink():
                raise ZooError(f"{entry.path}: is a symbolic link; trial folders are read "
                               f"without following links")
            if (Path(entry.path) / STATE).exists() or (Path(entry.path) / STATE).is_symlink():
                checkpoints[int(suffix)] = Path(entry.path) / STATE
    return Trial(folder, params, results, checkpoints)


def read_trials(source: Path) -> list[Trial]:
    """Every trial folder under `source` (any folder holding a params.json), sorted by path;
    linked folders are not descended."""
    folders = sorted(Path(parent) for parent, _, files in os.walk(source) if PARAMS in files)
    if not folders:
        raise ZooError(f"{source}: no trial folders (no {PARAMS} anywhere below it)")
    return [read_trial(folder) for folder in folders]


def read_trial_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's state_dict, `module.` prefixes removed; pickled code is refused, and so
    is a link, a FIFO or any file that is not regular (opened before torch reads a byte)."""
    try:
        with open_regular(path) as handle:
            state = torch.load(handle, map_location="cpu", weights_only=True)
    except ZooFolderError:
        raise
    except Exception as error:  # untrusted file: every failure is the file's fault
        raise ZooError(f"{path}: refused to load; not a plain state_dict of tensors "
                       f"(read with weights_only=True): {_reason(error)}") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ZooError(f"{path}: expected a state_dict (parameter name -> tensor), "
                       f"got {type(state).__name__}")
    state = {k.removeprefix(PREFIX): v for k, v in state.items()}
    if state and all(k.startswith(MODULE_LIST) for k in state):  # published Sequential names
        state = {k.removeprefix(MODULE_LIST): v for k, v in state.items()}
    return state


def _reason(error: Exception) -> str:
    """The line of torch's message that names what the file tried to load, else the first."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return short_repr((named or lines or [type(error).__name__])[0], 200)


def _number(value: Any) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def translate(line: dict[str, Any]) -> dict[str, Any]:
    """A result line in our column names: published keys first, our own names override them.

    Published logs (natural) are exponentiated; accuracies give errors as 1 - accuracy.
    """
    out: dict[str, Any] = {}
    for key in ("train_loss", "test_loss"):
        if key in line:
            out[key] = _number(line[key])
    for key, column in PUBLISHED.items():
        if key in line and _number(line[key]) is not None:  # NaN: not measured
            out[column] = float(line[key])
            out[column.replace("accuracy", "error")] = 1.0 - float(line[key])
    for key, column in LOGS.items():
        if line.get(key) is not None and math.isfinite(line[key]):
            out[column] = math.exp(line[key])
    for key, name in (*CURVES.items(), *((n, n) for n in PAIR_MEANS)):
        if key in line:
            out[f"pair:{name}"] = _number(line[key])
    out.update({name: line[name] for name in OWN if name in line})
    if out.get("heavy_tail_alphas") is not None:  # JSON has no NaN: skipped layers are null
        out["heavy_tail_alphas"] = [math.nan if a is None else a for a in out["heavy_tail_alphas"]]
    return out


def clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN and infinities to null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [clean(v) for v in value]
    return value


def dump(data: Any, indent: int | None = None) -> str:
    """Sorted-key strict JSON of `data` after `clean`."""
    return json.dumps(clean(data), sort_keys=True, allow_nan=False, indent=indent)


def result_text(line: dict[str, Any]) -> str:
    """One result.json line: strict JSON but for the published losses and accuracies, which
    are NaN (as Ray Tune writes a missing number) where not measured or not finite:
    ModelZooDataset computes ggap = train_acc - test_acc on every line it reads, before the
    check that makes it retry with the other line offset, and None - None stops it."""
    missing = {key: math.nan for key in NUMBERS if not isinstance(line.get(key), (int, float))
               or not math.isfinite(line[key])}
    return json.dumps({**clean(line), **missing}, sort_keys=True)


def published_line(row: dict[str, Any], pair_means: dict[str, float | None]) -> dict[str, Any]:
    """A result line of one stored checkpoint: published keys, logs, and our own names."""
    line: dict[str, Any] = {"train_loss": row["train_loss"], "test_loss": row["test_loss"],
                            "train_acc": row["train_accuracy"], "test_acc": row["test_accuracy"]}
    for key, column in (("log_hessian_top_ev", "hessian_top_eigenvalue_train"),
                        ("log_hessian_trace", "hessian_trace_train"),
                        ("log_hessian_top_ev_test", "hessian_top_eigenvalue_test"),
                        ("log_hessian_trace_test", "hessian_trace_test")):
        value = row.get(column)
        if value is not None and math.isfinite(value) and value > 0:
            line[key] = math.log(value)
    curves = {name: key for key, name in CURVES.items()}
    for name, value in pair_means.items():
        line[curves.get(name, name)] = value
    line.update({name: row[name] for name in OWN if row.get(name) is not None})
    return line


def metric_epochs(trials: Sequence[Trial]) -> list[int]:
    """Epochs whose result lines carry landscape metrics in any trial."""
    landscape = set(LOGS) | set(CURVES) | set(PAIR_MEANS) | {c.name for c in HESSIAN}
    return sorted({e for t in trials for e, line in enumerate(t.results)
                   if landscape & {k for k, v in line.items() if v is not None}})
