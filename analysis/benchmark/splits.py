"""The benchmark's split schemes: folds that hold out whole cells, the largest load values, or
whole seeds; seeded, and stored with the zoo as benchmark/splits.json.

- cell: k folds grouped by cell, stratified over the grid (each load and each temperature
  value spread over the folds, see `_cell_labels`); k = min(5, cells // 2), and no test fold
  holds a single cell.
- extrapolation: one fold whose test set is every cell of the largest load values (widths),
  as many of the largest values as it takes to hold out at least two cells.
- seed: models grouped by seed, min(5, seeds) folds dealt from a seeded permutation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loaders.store import Columns
from zoo.errors import ZooError
from zoo.folder.names import confined, read_json, write_atomically

PROTOCOL = 1  # bump when a scheme's rule changes: stored splits of another protocol are redone
SCHEMES = ("cell", "extrapolation", "seed")
MAX_FOLDS = 5
SPLITS_FILE = "benchmark/splits.json"


@dataclass(frozen=True)
class Scheme:
    """One split scheme: `unit` is the column whose values are held out together; each fold
    lists the unit values of its test set (train: every other row)."""

    name: str
    unit: str
    folds: tuple[tuple, ...]

    def test_mask(self, columns: Columns, fold: int) -> np.ndarray:
        """(rows,) bool: the rows in fold `fold`'s test set."""
        return np.isin(columns[self.unit], list(self.folds[fold]))


def make_schemes(columns: Columns, seed: int) -> tuple[dict[str, Scheme], dict[str, str]]:
    """The schemes the zoo supports, and for each one it does not, the reason."""
    rng = np.random.default_rng(seed)
    cells = sorted({(float(l), float(t), str(c)) for l, t, c in zip(
        columns["load_value"], columns["temperature_value"], columns["cell_id"])})
    schemes, skipped = {}, {}
    k = min(MAX_FOLDS, len(cells) // 2)
    if k >= 2:
        labels = _cell_labels(cells, k, rng)
        folds = [tuple(c for (_, _, c), f in zip(cells, labels) if f == i) for i in range(k)]
        schemes["cell"] = Scheme("cell", "cell_id", tuple(folds))
    else:
        skipped["cell"] = f"needs 4 or more cells, the zoo has {len(cells)}"
    loads = sorted({load for load, _, _ in cells}, reverse=True)
    held = next((loads[:n] for n in range(1, len(loads))
                 if sum(load in loads[:n] for load, _, _ in cells) >= 2), None)
    if held is not None:
        schemes["extrapolation"] = Scheme("extrapolation", "cell_id", (tuple(
            c for load, _, c in cells if load in held),))
    else:
        skipped["extrapolation"] = "needs two load values and two held-out cells"
    seeds = sorted({int(s) for s in columns["seed"]})
    if len(seeds) >= 2:
        k = min(MAX_FOLDS, len(seeds))
        order = [seeds[i] for i in rng.permutation(len(seeds))]
        schemes["seed"] = Scheme("seed", "seed", tuple(tuple(sorted(order[i::k]))
                                                       for i in range(k)))
    else:
        skipped["seed"] = f"needs two seeds, the zoo has {len(seeds)}"
    return schemes, skipped


def _cell_labels(cells: list[tuple[float, float, str]], k: int, rng: np.random.Generator
                 ) -> np.ndarray:
    """The fold of each cell (sorted by load, temperature): (rank of its load + rank of its
    temperature) mod k, ranks seededly permuted, so each load and each temperature value is
    spread over the folds; where that leaves a fold under two cells, blocks of k neighbours
    each deal a seeded permutation of the folds."""
    loads = sorted({load for load, _, _ in cells})
    temperatures = sorted({temperature for _, temperature, _ in cells})
    load_rank, temperature_rank = rng.permutation(len(loads)), rng.permutation(len(temperatures))
    labels = np.array([(load_rank[loads.index(load)] + temperature_rank[
        temperatures.index(temperature)]) % k for load, temperature, _ in cells])
    if np.bincount(labels, minlength=k).min() >= 2:
        return labels
    return np.concatenate([rng.permutation(k) for _ in range(-(-len(cells) // k))])[:len(cells)]


def splits_document(schemes: dict[str, Scheme], skipped: dict[str, str], seed: int) -> dict:
    """The JSON document of benchmark/splits.json."""
    return {"protocol": PROTOCOL, "seed": seed, "skipped": skipped,
            "schemes": {name: {"unit": s.unit, "folds": [list(f) for f in s.folds]}
                        for name, s in schemes.items()}}


def write_splits(root: Path, document: dict) -> Path:
    """Write `document` to root/benchmark/splits.json (sorted keys), atomically."""
    path = confined(root, SPLITS_FILE)
    path.parent.mkdir(exist_ok=True)
    write_atomically(path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())
    return path


def read_splits(root: Path) -> dict[str, Scheme]:
    """The schemes stored in root/benchmark/splits.json."""
    document = read_json(confined(root, SPLITS_FILE), "benchmark splits file")
    if not isinstance(document, dict) or document.get("protocol") != PROTOCOL:
        raise ZooError(f"{Path(root) / SPLITS_FILE}: not splits of benchmark protocol "
                       f"{PROTOCOL}; rerun `zoo benchmark` to rewrite it")
    return {name: Scheme(name, body["unit"], tuple(tuple(f) for f in body["folds"]))
            for name, body in document["schemes"].items()}
