"""`zoo verify`: check every byte of a zoo folder that a reader would trust.

The manifest, zoo.json and README.md (sha256, spec hash, `configs:` paths), every shard
(regular file inside the folder, sha256, Parquet schema and rows), every layout (against its
architecture rebuilt on the meta device), counts and ids, and rows: weights length against the
layout, finite flags against the values, HDF5 contents against Parquet (`deep`: every row; by
default a sample). Each problem is one line naming its file or model; a folder that cannot be
read at all raises ZooFolderError (the CLI's exit code 2).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import numpy as np

from analysis.verify_ids import check_identities, unlisted_files
from analysis.verify_rows import check_hdf5, check_rows
from zoo.errors import ZooError, ZooFolderError
from zoo.folder.documents import check_document, check_readme, check_record_hash
from zoo.folder.layouts import check_architecture
from zoo.folder.names import ZOO_JSON
from zoo.folder.reader import ZooReader
from zoo.folder.schema import arrow_schema
from zoo.spec import ZooSpec
from zoo.specfile import spec_from_dict


def _collect(check: Callable[[], Any], problems: list[str]) -> Any:
    """Run `check`, turning a ZooError into a problem line; its result, or None."""
    try:
        return check()
    except ZooError as error:
        problems.append(str(error))
        return None


def _check_documents(reader: ZooReader) -> list[str]:
    problems: list[str] = []
    _collect(lambda: check_document(reader.root, reader.manifest, ZOO_JSON), problems)
    _collect(lambda: check_record_hash(reader.root, reader.manifest, reader.record.spec_hash),
             problems)
    _collect(lambda: check_readme(reader.root, reader.manifest), problems)
    return problems


def _check_shards(reader: ZooReader) -> list[str]:
    problems: list[str] = []
    for shard in reader.manifest.shards:
        path = _collect(lambda: reader.check_whole(shard), problems)
        if path is None or shard.format != "parquet":
            continue  # HDF5 contents are compared with Parquet rows in check_hdf5
        metadata = _collect(lambda: reader.parquet_metadata(shard), problems)
        if metadata is None:
            continue
        if not metadata.schema.to_arrow_schema().remove_metadata().equals(
                arrow_schema(shard.table)):
            problems.append(f"{path}: schema differs from the {shard.table} table's schema")
        if metadata.num_rows != shard.rows:
            problems.append(f"{path}: {metadata.num_rows} rows, the manifest says {shard.rows}")
        else:
            _collect(lambda: reader.check_footer(shard), problems)
    return problems


def _check_layouts(reader: ZooReader, spec: ZooSpec | None) -> list[str]:
    problems: list[str] = []
    for key in reader.manifest.layouts:
        layout = _collect(lambda: reader.layout(key), problems)
        if layout is None:
            continue
        source = reader.root / "layouts" / f"{key}.json"
        if spec is not None and (layout.family != spec.architecture.family
                                 or dict(layout.args) != dict(spec.architecture.args)):
            problems.append(f"{source}: family {layout.family!r} and args {dict(layout.args)} "
                            f"differ from zoo.json's architecture")
            continue
        _collect(lambda: check_architecture(layout, reader.record.data_info, source), problems)
    return problems


def _check_counts(reader: ZooReader, spec: ZooSpec) -> list[str]:
    cells = len(spec.load_axis.values) * len(spec.temperature_axis.values)
    kept = len(spec.kept_epochs)
    expected_rows = cells * len(spec.seeds) * kept
    models = reader.table("models", columns=["model_id", "epoch", "cell_id", "layout",
                                             "num_params"])
    problems = []
    if models.num_rows != expected_rows:
        problems.append(f"{reader.root}: {models.num_rows} model rows, the spec makes "
                        f"{expected_rows} ({cells} cells × {len(spec.seeds)} seeds × "
                        f"{kept} kept epochs)")
    cell_rows = reader.table("cells", columns=["cell_id"]).column("cell_id").to_pylist()
    if len(cell_rows) != cells or len(set(cell_rows)) != len(cell_rows):
        problems.append(f"{reader.root}: {len(cell_rows)} cells rows "
                        f"({len(set(cell_rows))} distinct), the spec makes {cells}")
    keys = list(zip(models.column("model_id").to_pylist(), models.column("epoch").to_pylist()))
    if len(set(keys)) != len(keys):
        problems.append(f"{reader.root}: duplicate (model_id, epoch) rows")
    for key, params in set(zip(models.column("layout").to_pylist(),
                               models.column("num_params").to_pylist())):
        if key not in reader.manifest.layouts:
            problems.append(f"{reader.root}: model rows name layout {key!r}, which the "
                            f"manifest does not list")
        elif reader.layout(key).size != params:
            problems.append(f"{reader.root}: rows of layout {key} say num_params = {params}; "
                            f"the layout has {reader.layout(key).size}")
    return problems


def recompute(reader: ZooReader, count: int, seed: int = 0,
              data_root: str | Path | None = None) -> list[str]:
    """Re-evaluate `count` random stored checkpoints; name those whose metrics differ.

    The data come from `data_root` (given by the user) or a built-in offline data set; the
    `root` that zoo.json names is never opened.
    """
    import torch

    from loaders.models import module_from
    from loaders.store import read_metadata, read_weights
    from zoo import dataroot
    from zoo.objective import Objective
    from zoo.precision import recompute_tolerance

    spec = reader.record.spec
    data = spec["data"]
    if data.get("root") is not None and data_root is None:
        return [f"{reader.root / ZOO_JSON}: data set {data['name']!r} lives in a folder; "
                f"--recompute needs it passed with --data-root (the root zoo.json names is "
                f"never opened)"]
    bundle = dataroot.load(data["name"], root=data_root, args=data.get("args"))
    if bundle.fingerprint() != reader.record.data_fingerprint:
        return [f"{reader.root / ZOO_JSON}: data fingerprint {reader.record.data_fingerprint} "
                f"differs from the data set's {bundle.fingerprint()}; cannot recompute"]
    columns = read_metadata(reader)
    chosen = np.array(sorted(random.Random(seed).sample(range(len(columns["model_id"])),
                                                        min(count, len(columns["model_id"])))))
    store = read_weights(reader, columns, chosen)
    problems = []
    tolerance = recompute_tolerance(reader.record.precision)
    torch.set_num_threads(1)  # as the workers that recorded the metrics
    for j, index in enumerate(chosen):
        row = {n: columns[n][index] for n in ("model_id", "epoch", "data_fraction", "beta",
                                              "test_loss", "test_error")}
        key = store.keys[j]
        model = module_from(store.layouts[key], store.arrays[key][store.slots[j]],
                            reader.record.data_info, reader.root)
        result = Objective(bundle.subsample(float(row["data_fraction"])),
                           beta=float(row["beta"])).evaluate(model, "test")
        for name in ("loss", "error"):
            recorded = float(row[f"test_{name}"])
            if not tolerance.accepts(name, result[name], recorded):
                problems.append(f"model {row['model_id']} epoch {row['epoch']}: test_{name} "
                                f"recomputes to {result[name]!r}, recorded {recorded!r} "
                                f"(tolerance of {tolerance.made})")
    return problems


def verify(root: str | Path, recompute_count: int = 0, *, deep: bool = False,
           data_root: str | Path | None = None) -> list[str]:
    """Every problem found in the zoo folder `root` (or at a URI, read through the local
    cache), each naming its file or model.

    Raises:
        ZooFolderError: the folder cannot be read at all (no or a malformed manifest.json,
            an unreadable zoo.json).
    """
    reader = ZooReader(root, check_documents=False)
    try:
        problems = _verify(reader, recompute_count, deep, data_root)
    except ZooError as error:
        problems = [str(error)]
    except Exception as error:  # a decoder failing in a way no check foresaw: still one line
        return [f"{root}: verification stopped at an unexpected {type(error).__name__}: {error}"]
    return [reader.named(problem) for problem in problems]  # a store's: its URIs


def _verify(reader: ZooReader, recompute_count: int, deep: bool,
            data_root: str | Path | None) -> list[str]:
    problems = _check_documents(reader)
    spec = _collect(lambda: _spec(reader), problems)
    problems += _check_shards(reader) + _check_layouts(reader, spec)
    if problems or spec is None:
        return problems  # counts and values are meaningless over broken files
    problems += _check_counts(reader, spec) + unlisted_files(reader)
    if problems:
        return problems
    problems += check_identities(reader, spec)
    if problems:
        return problems
    problems += check_rows(reader, deep) + check_hdf5(reader, deep)
    if recompute_count and not problems:
        problems += recompute(reader, recompute_count, data_root=data_root)
    return problems


def _spec(reader: ZooReader) -> ZooSpec:
    try:
        return spec_from_dict(reader.record.spec)
    except (ZooError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ZooFolderError(f"{reader.root / ZOO_JSON}: its spec is not valid ({error})") \
            from None
