"""`zoo verify`'s identity checks: every row is one the spec makes, and every file is listed.

The spec in zoo.json (with zoo.json's data fingerprint) expands into its cells, seeds, model
ids and kept epochs (`ZooSpec.jobs`), so a row cannot claim a model, seed, epoch, cell or data
set the spec never made, nor a row of one cell sit in another cell's shard. Files under the
shard folders that the manifest does not list are named too (a reader never opens them, but
a zoo that holds them is not the zoo its manifest describes).
"""

from __future__ import annotations

import os
from pathlib import Path

from zoo.folder.manifest import Shard
from zoo.folder.names import HDF5_FOLDER, LAYOUTS, TABLE_FOLDERS
from zoo.folder.reader import ZooReader
from zoo.printable import printable
from zoo.spec import ZooSpec

# spec_hash is not among them: a row keeps the hash of the spec that trained it, and a zoo
# grown or pruned by another spec holds rows of several
MODEL_FIELDS = ["model_id", "cell_id", "seed", "epoch", "data_fingerprint"]


def check_identities(reader: ZooReader, spec: ZooSpec) -> list[str]:
    """One line per shard whose rows hold a model, seed, epoch, cell or data fingerprint
    other than the spec's (the first such row of the shard is named)."""
    record = reader.record
    jobs = {job.model_id: job for job in spec.jobs(record.data_fingerprint)}
    cells = {job.cell_id for job in jobs.values()}
    kept = set(spec.kept_epochs)
    problems = []
    for shard in reader.manifest.shards_of("models"):
        rows = reader.parquet(shard, MODEL_FIELDS).to_pylist()
        for i, row in enumerate(rows):
            job = jobs.get(row["model_id"])
            wrong = _model_row(row, job, shard, kept, record.data_fingerprint)
            if wrong:
                problems.append(f"{reader.path(shard)}: row {i} (model "
                                f"{printable(row['model_id'])} epoch {row['epoch']}): {wrong}")
                break
    for table, fields in (("cells", ["cell_id"]), ("pairs", ["cell_id", "model_id_a",
                                                             "model_id_b"])):
        for shard in reader.manifest.shards_of(table):
            for i, row in enumerate(reader.parquet(shard, fields).to_pylist()):
                wrong = _cell_row(row, shard, cells, jobs)
                if wrong:
                    problems.append(f"{reader.path(shard)}: row {i}: {wrong}")
                    break
    return problems


def _model_row(row: dict, job, shard: Shard, kept: set[int], fingerprint: str) -> str | None:
    """What is wrong with one models row, or None."""
    if job is None:
        return "its model id is not one the spec makes (ZooSpec.jobs over zoo.json's spec)"
    checks = [("cell_id", job.cell_id), ("seed", job.seed), ("data_fingerprint", fingerprint)]
    for name, expected in checks:
        if row[name] != expected:
            return f"{name} {printable(row[name])}; the spec makes {expected}"
    if row["epoch"] not in kept:
        return f"epoch {row['epoch']} is not a kept epoch of the spec ({sorted(kept)})"
    if row["cell_id"] != shard.cell_id:
        return f"cell {row['cell_id']} in the shard of cell {shard.cell_id}"
    return None


def _cell_row(row: dict, shard: Shard, cells: set[str], jobs: dict) -> str | None:
    if row["cell_id"] not in cells:
        return f"cell {printable(row['cell_id'])} is not one the spec makes"
    if row["cell_id"] != shard.cell_id:
        return f"cell {row['cell_id']} in the shard of cell {shard.cell_id}"
    for name in ("model_id_a", "model_id_b"):
        if name in row and getattr(jobs.get(row[name]), "cell_id", None) != row["cell_id"]:
            return f"{name} {printable(row[name])} is not a model of cell {row['cell_id']}"
    return None


def unlisted_files(reader: ZooReader) -> list[str]:
    """A line per file (or link, or other entry) under the shard folders and layouts/ that the
    manifest does not list; links are named, never followed."""
    root = reader.root
    listed = {s.path for s in reader.manifest.shards + reader.manifest.retired}
    listed |= {f"{LAYOUTS}/{key}.json" for key in reader.manifest.layouts}
    problems = []
    for folder in (*TABLE_FOLDERS.values(), HDF5_FOLDER, LAYOUTS):
        top = root / folder
        if top.is_symlink() or not top.is_dir():
            continue  # a linked shard folder is refused when a listed shard is opened
        for parent, folders, files in os.walk(top):  # never descends a link to a folder
            for name in files + [f for f in folders if (Path(parent) / f).is_symlink()]:
                path = Path(parent) / name
                if path.relative_to(root).as_posix() not in listed:
                    problems.append(f"{printable(path)}: not listed by the manifest; no reader "
                                    f"opens it (remove it, or regenerate the zoo)")
    return sorted(problems)
