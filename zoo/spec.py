"""Zoo specs: frozen dataclasses, their canonical JSON and ids, and the grid expansion into jobs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

LOAD_AXES = ("width", "model_dim", "data_fraction", "beta")
TEMPERATURE_AXES = ("batch_size", "learning_rate", "weight_decay")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")
AUGMENTATIONS = ("none", "flip", "crop", "crop-flip", "crop-rotate", "crop-flip-rotate")
STACKING = ("auto", "always", "never")
GRAPHS = ("auto", "never")
PRECISIONS = ("fp32", "bf16")
VECTOR_MEMORY_GB = 8.0  # metrics.hessian.vector_memory_gb: ResNet-18 width-256 metrics in 20 GB
LATER_DEFAULTS = {  # fields newer than some zoos, left out of to_dict at their defaults
    "training": {"graphs": "auto", "precision": "fp32", "deterministic": True},
    "metrics.hessian": {"vector_memory_gb": VECTOR_MEMORY_GB},
}


def canonical_json(value: Any) -> str:
    """Sorted-key, whitespace-free JSON: the text that ids and spec hashes are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def short_hash(value: Any, length: int = 16) -> str:
    """First `length` hex digits of the sha256 of `value`'s canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class ArchitectureSpec:
    """Architecture family, its default width, and fixed arguments (depth, heads, ...)."""

    family: str
    width: int = 32
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """Data set by registry name; `root` for local-folder sets; `beta` is the PDE coefficient."""

    name: str
    root: str | None = None
    fraction: float = 1.0
    beta: float = 1.0
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingSpec:
    """The recipe; grid axes override learning_rate, batch_size and weight_decay per cell."""

    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    epochs: int = 20
    batch_size: int = 64
    augmentation: str = "none"
    stacking: str = "auto"  # train a cell's seeds as one vmapped population: auto, always, never
    graphs: str = "auto"  # auto: one model's step replayed as a CUDA graph on CUDA; never
    precision: str = "fp32"  # bf16: autocast of forward and backward (opt-in, part of the id)
    deterministic: bool = True  # CUDA: deterministic cuDNN/cuBLAS kernels (same spec, same bits)


@dataclass(frozen=True)
class Axis:
    """One phase axis: which cell field it sets and the values it takes."""

    name: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class HessianSpec:
    """Hessian probes: `batches` × `batch_size` fixed samples, iterations and tolerance."""

    enabled: bool = True
    batches: int = 10
    batch_size: int = 64
    max_iter: int = 100
    tol: float = 1e-3
    micro_batch_size: int = 128  # (sample, probe) pairs differentiated at once: memory, not results
    vector_memory_gb: float = VECTOR_MEMORY_GB  # parameter-sized vectors (basis, probes), GB


@dataclass(frozen=True)
class SimilaritySpec:
    """CKA of outputs over `batches` × `batch_size` test samples for every seed pair, and
    Yang et al.'s mixup CKA over `mixup_batches` × `batch_size` pooled train samples, one
    λ ~ Beta(mixup_alpha, mixup_alpha) per batch."""

    enabled: bool = True
    batches: int = 10
    batch_size: int = 128
    mixup_batches: int = 6
    mixup_alpha: float = 16.0


@dataclass(frozen=True)
class CurveSpec:
    """Bezier mode-connectivity curve, fitted in rounds until its mc has converged.

    One round trains the control point for `steps` SGD steps (None: `epochs` epochs of the
    zoo's own train set, as PTMZ fits its curves) with the curve schedule restarted; after
    each round mc on train error is measured at `points` points. The fit stops when two
    rounds' mc differ by less than `tolerance` (error points; None: half the task's default
    phase mc threshold: 1 point, 0.01 relative L2 error for PINNs), or after `max_rounds`
    rounds without converging (recorded per pair).
    BatchNorm is re-estimated on `bn_samples` train samples (None: the full train set).
    """

    enabled: bool = True
    steps: int | None = None
    epochs: int = 10
    points: int = 5
    learning_rate: float = 0.2  # 0.05 drifted for 4x longer on the demo's MLPs (README)
    batch_size: int = 128
    tolerance: float | None = None
    max_rounds: int = 4
    bn_samples: int | None = None


@dataclass(frozen=True)
class MetricsSpec:
    """Which epochs get landscape metrics, and each metric's own parameters."""

    epochs: tuple[int, ...]
    hessian: HessianSpec = HessianSpec()
    similarity: SimilaritySpec = SimilaritySpec()
    curve: CurveSpec = CurveSpec()
    spectra: bool = True
    spectra_min_eigenvalues: int = 50  # WeightWatcher's older default; α of fewer is noise


@dataclass(frozen=True)
class Cell:
    """One grid cell: every hyperparameter that defines its models except the seed."""

    width: int
    data_fraction: float
    beta: float
    batch_size: int
    learning_rate: float
    weight_decay: float


@dataclass(frozen=True)
class ModelJob:
    """One model to train: a cell and a seed, with their stable ids."""

    cell: Cell
    seed: int
    cell_id: str
    model_id: str


@dataclass(frozen=True)
class ZooSpec:
    """A whole zoo: what to train, on which grid, with which seeds, checkpoints and metrics."""

    name: str
    architecture: ArchitectureSpec
    data: DataSpec
    training: TrainingSpec
    load_axis: Axis  # the YAML's grid.load
    temperature_axis: Axis  # the YAML's grid.temperature
    seeds: tuple[int, ...]
    checkpoint_epochs: tuple[int, ...]
    metrics: MetricsSpec
    phases: Mapping[str, float | str] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the resolved spec that `zoo.json` records). Fields added
        after zoos were written (LATER_DEFAULTS) are left out at their defaults, so those
        zoos keep their spec hash, resume, grow and round-trip."""
        body = json.loads(json.dumps(asdict(self)))
        for path, defaults in LATER_DEFAULTS.items():
            section = body
            for key in path.split("."):
                section = section[key]
            for name, default in defaults.items():
                if section[name] == default:
                    section.pop(name)
        return body

    @property
    def kept_epochs(self) -> tuple[int, ...]:
        """Epochs whose checkpoints are stored: the checkpoint epochs and the metric epochs."""
        return tuple(sorted(set(self.checkpoint_epochs) | set(self.metrics.epochs)))

    def spec_hash(self) -> str:
        """Hash of everything in the spec (name and description included)."""
        return short_hash(self.to_dict())

    def cells(self) -> list[Cell]:
        """Grid cells in load-major order."""
        base = {
            "width": self.architecture.width, "data_fraction": self.data.fraction,
            "beta": self.data.beta, "batch_size": self.training.batch_size,
            "learning_rate": self.training.learning_rate,
            "weight_decay": self.training.weight_decay,
        }
        out = []
        for load_value in self.load_axis.values:
            for temperature_value in self.temperature_axis.values:
                values = dict(base)
                values[load_field(self.load_axis.name)] = load_value
                values[load_field(self.temperature_axis.name)] = temperature_value
                out.append(Cell(**values))
        return out

    def cell_identity(self, cell: Cell, data_fingerprint: str) -> dict[str, Any]:
        """Everything that defines a cell's models except the seed (hashed into `cell_id`)."""
        recipe = asdict(self.training)
        for name in ("batch_size", "learning_rate", "weight_decay", "stacking", "graphs",
                     "deterministic"):
            recipe.pop(name)
        if recipe["precision"] == "fp32":  # the default leaves the ids of existing zoos alone
            recipe.pop("precision")
        return {
            "architecture": {"family": self.architecture.family,
                             "args": dict(self.architecture.args)},
            "data": {"name": self.data.name, "args": dict(self.data.args),
                     "fingerprint": data_fingerprint},
            "recipe": recipe,
            "cell": asdict(cell),
        }

    def jobs(self, data_fingerprint: str) -> list[ModelJob]:
        """Expand the grid into model jobs (cell × seed) with stable ids."""
        out = []
        for cell in self.cells():
            identity = self.cell_identity(cell, data_fingerprint)
            cell_id = short_hash(identity)
            for seed in self.seeds:
                model_id = short_hash({**identity, "seed": seed})
                out.append(ModelJob(cell, seed, cell_id, model_id))
        return out


def load_field(axis: str) -> str:
    """The Cell field an axis sets: `model_dim` is the width of a GPT, every other its name."""
    return "width" if axis == "model_dim" else axis
