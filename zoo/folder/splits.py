"""Train/val/test splits of a zoo: a hash of each model or cell id, never silently empty."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
FRACTIONS = (0.7, 0.15, 0.15)  # ZooDataset's default and the dataset card's splits


def unit(identifier: str) -> float:
    """The first 8 bytes of sha256(identifier) as a number u in [0, 1)."""
    return int.from_bytes(hashlib.sha256(identifier.encode()).digest()[:8], "big") / 2**64


def split_of(identifier: str, fractions: Sequence[float]) -> str:
    """'train' if u < f_train, 'val' if u < f_train + f_val, else 'test' (u = unit(identifier))."""
    u = unit(identifier)
    return "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"


def owners(identifiers: Sequence[str], fractions: Sequence[float]) -> dict[str, str]:
    """The split of each distinct identifier: `split_of`, then every split with a nonzero
    fraction that came out empty takes one identifier, so no part is silently empty.

    The identifier moved is the one, from a split holding two or more, whose u lies nearest
    the empty split's interval; a zoo with fewer identifiers than nonzero fractions keeps
    its empty splits (ZooDataset refuses to return one).
    """
    distinct = sorted(set(identifiers))
    u = {i: unit(i) for i in distinct}
    owner = {i: split_of(i, fractions) for i in distinct}
    bounds = np.concatenate([[0.0], np.cumsum(fractions)])
    for number, split in enumerate(SPLITS):
        members = [i for i in distinct if owner[i] == split]
        if members or fractions[number] <= 0:
            continue
        sizes = {s: sum(o == s for o in owner.values()) for s in SPLITS}
        donors = [i for i in distinct if sizes[owner[i]] >= 2]
        if not donors:
            break
        low, high = bounds[number], bounds[number + 1]
        owner[min(donors, key=lambda i: (max(low - u[i], u[i] - high, 0.0), i))] = split
    return owner


def assign_splits(identifiers: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """The split of every row (see `owners`), as an object array of 'train'/'val'/'test'."""
    owner = owners([str(i) for i in identifiers], fractions)
    return np.array([owner[str(i)] for i in identifiers], dtype=object)


def summary(split: np.ndarray, model_ids: np.ndarray, cell_ids: np.ndarray,
            kept: np.ndarray) -> dict[str, dict[str, int]]:
    """Rows, models and cells per split among the rows `kept` (a boolean mask)."""
    out = {}
    for name in SPLITS:
        rows = kept & (split == name)
        out[name] = {"rows": int(rows.sum()), "models": len(set(model_ids[rows])),
                     "cells": len(set(cell_ids[rows]))}
    return out
