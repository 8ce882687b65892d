"""SANE's token layout (Schürholt et al., `tokenize_checkpoint` in HSG-AIML/SANE), as rows of
flat-vector positions for loaders.representations.Tokens.

SANE walks the state_dict in order and makes one layer of each entry whose name holds
"weight" (one row per output unit: its incoming weights, then the bias of the same name with
"bias" for "weight" when there is one) and of each "running_mean" and "running_var" (one value
per unit). A BatchNorm thus gives three layers (weight + bias, running mean, running var); any
other entry (num_batches_tracked, a lone bias, a scalar) is no token. With `ignore_bn`, SANE
drops every entry whose name holds "bn", "downsample.1" or "batchnorm": right for the ResNets'
torchvision names, blind to a BatchNorm under another name (the cnn family's "2.weight"), which
it would keep as weights; such a layout is refused here rather than tokenized wrongly.

Tokens of the same token size equal SANE's tokens, masks and positions value for value, and
SANE's tokens_to_checkpoint reads them (README, export-ray-tune). SANE's tokensize=0 counts
only weights that have a bias (its comparison sits inside the bias branch), so on bias-free
convs it picks the head's width and cuts conv rows; token_size=0 here is the widest row.
"""

from __future__ import annotations

import numpy as np

from zoo.layout import Entry, Layout

TOKEN_LAYOUTS = ("neurons", "sane")
BATCHNORM_NAMES = ("bn", "downsample.1", "batchnorm")
RUNNING = ("running_mean", "running_var")


def is_batchnorm(name: str) -> bool:
    """SANE's rule: whether entry `name` is taken for a BatchNorm's."""
    return any(part in name for part in BATCHNORM_NAMES)


def sane_rows(layout: Layout, ignore_bn: bool = False) -> list[np.ndarray]:
    """SANE's layers of `layout`, in order: per layer an int64 array (units, values per unit)
    of positions in the flat vector (weights row by row, then the unit's bias).

    Raises:
        ValueError: `ignore_bn` and a BatchNorm (a module with a running_mean) whose name
            SANE's rule does not catch.
    """
    if ignore_bn:
        missed = [e.name for e in layout.entries
                  if e.name.endswith("running_mean") and not is_batchnorm(e.name)]
        if missed:
            raise ValueError(f"ignore_bn: layout {layout.key} has BatchNorm "
                             f"{missed[0].removesuffix('running_mean')!r} whose name SANE's "
                             f"rule ({', '.join(BATCHNORM_NAMES)}) misses; use "
                             f"ignore_bn=False or token_layout='neurons'")
    names = {e.name: e for e in layout.entries}
    rows = []
    for entry in layout.entries:
        if not entry.shape or (ignore_bn and is_batchnorm(entry.name)):
            continue
        if "weight" in entry.name:
            columns = [_unit_rows(entry)]
            bias = names.get(entry.name.replace("weight", "bias"))
            if bias is not None and bias.shape == entry.shape[:1]:
                columns.append(_unit_rows(bias))
            rows.append(np.concatenate(columns, axis=1))
        elif any(part in entry.name for part in RUNNING):
            rows.append(_unit_rows(entry))
    return rows


def _unit_rows(entry: Entry) -> np.ndarray:
    return entry.offset + np.arange(entry.size).reshape(entry.shape[0], -1)
