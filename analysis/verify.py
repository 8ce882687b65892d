"""`zoo verify`: check a zoo folder's manifest, checksums, schema, counts, ids, and values."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from zoo.errors import ZooError
from zoo.folder.checkpoints import read_checkpoint
from zoo.folder.reader import ZooReader
from zoo.folder.schema import arrow_schema
from zoo.specfile import spec_from_dict


def _check_shards(reader: ZooReader) -> list[str]:
    problems = []
    for shard in reader.manifest.shards:
        try:
            path = reader.path(shard)
        except ZooError as error:
            problems.append(str(error))
            continue
        if shard.format != "parquet":
            continue
        schema = pq.read_schema(path)
        expected = arrow_schema(shard.table)
        if not schema.remove_metadata().equals(expected):
            problems.append(f"{path}: schema differs from the {shard.table} table's schema")
        rows = pq.read_metadata(path).num_rows
        if rows != shard.rows:
            problems.append(f"{path}: {rows} rows, the manifest says {shard.rows}")
    for key in reader.manifest.layouts:
        try:
            reader.layout(key)
        except (ZooError, ValueError) as error:
            problems.append(str(error))
    return problems


def _check_counts(reader: ZooReader) -> list[str]:
    spec = reader.record.spec
    cells = len(spec["load_axis"]["values"]) * len(spec["temperature_axis"]["values"])
    kept = len(spec_from_dict(spec).kept_epochs)
    expected_rows = cells * len(spec["seeds"]) * kept
    models = reader.table("models", columns=["model_id", "epoch", "cell_id", "finite",
                                             "train_loss", "test_loss", "layout", "num_params"])
    problems = []
    if models.num_rows != expected_rows:
        problems.append(f"{reader.root}: {models.num_rows} model rows, the spec makes "
                        f"{expected_rows} ({cells} cells × {len(spec['seeds'])} seeds × "
                        f"{kept} kept epochs)")
    cell_rows = reader.table("cells", columns=["cell_id"]).column("cell_id").to_pylist()
    if len(cell_rows) != cells or len(set(cell_rows)) != len(cell_rows):
        problems.append(f"{reader.root}: {len(cell_rows)} cells rows "
                        f"({len(set(cell_rows))} distinct), the spec makes {cells}")
    keys = list(zip(models.column("model_id").to_pylist(), models.column("epoch").to_pylist()))
    if len(set(keys)) != len(keys):
        problems.append(f"{reader.root}: duplicate (model_id, epoch) rows")
    rows = models.to_pylist()
    for row in rows:
        losses = (row["train_loss"], row["test_loss"])
        if row["finite"] and not all(v is not None and math.isfinite(v) for v in losses):
            problems.append(f"model {row['model_id']} epoch {row['epoch']}: finite = true "
                            f"but its losses are {losses}")
        if reader.layout(row["layout"]).size != row["num_params"]:
            problems.append(f"model {row['model_id']}: num_params differs from its layout")
    return problems


def recompute(reader: ZooReader, count: int, seed: int = 0) -> list[str]:
    """Re-evaluate `count` random stored checkpoints; name those whose metrics differ."""
    import torch

    from zoo import datasets
    from zoo.spec import Cell
    from zoo.objective import Objective
    from zoo.training import build_model

    spec_dict = reader.record.spec
    rows = reader.table("models").to_pylist()
    if not rows:
        return []
    data = spec_dict["data"]
    bundle = datasets.load(data["name"], root=data["root"], args=data["args"])
    spec = spec_from_dict(spec_dict)
    problems = []
    torch.set_num_threads(1)  # as the workers that recorded the metrics
    for row in random.Random(seed).sample(rows, min(count, len(rows))):
        cell = Cell(**{k: row[k] for k in ("width", "data_fraction", "beta", "batch_size",
                                           "learning_rate", "weight_decay")})
        model = build_model(spec, cell, bundle, row["seed"])
        layout = reader.layout(row["layout"])
        flat = (np.asarray(row["weights"], np.float32) if row.get("weights_file") is None
                else read_checkpoint(reader.root, row["weights_file"], row["weights_index"],
                                     row["weights_sha256"], layout))
        model.load_state_dict(layout.unflatten(flat))
        result = Objective(bundle.subsample(cell.data_fraction), beta=cell.beta).evaluate(
            model, "test")
        for key in ("loss", "error"):
            recorded = row[f"test_{key}"]
            if not (math.isclose(result[key], recorded, rel_tol=1e-6, abs_tol=1e-9)
                    or (math.isnan(result[key]) and math.isnan(recorded))):
                problems.append(f"model {row['model_id']} epoch {row['epoch']}: test_{key} "
                                f"recomputes to {result[key]!r}, recorded {recorded!r}")
    return problems


def verify(root: Path, recompute_count: int = 0) -> list[str]:
    """Every problem found in the zoo folder `root`, each naming its file or model."""
    try:
        reader = ZooReader(root)
    except ZooError as error:
        return [str(error)]
    problems = _check_shards(reader)
    if problems:
        return problems  # counts and values are meaningless over broken shards
    problems += _check_counts(reader)
    if recompute_count:
        problems += recompute(reader, recompute_count)
    return problems
