"""What a spec with fewer seeds or grid values would drop from a zoo, and dropping it (--prune).

A smaller spec on an existing zoo is never taken as growth: `make_plan` refuses it unless the
user asks for `--prune`, which removes the dropped cells from the manifest first and deletes
their files after, so a crash in between leaves a consistent zoo and, at worst, stray files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooFolderError
from zoo.folder.manifest import Manifest
from zoo.folder.names import FAILURES
from zoo.folder.zoofolder import ZooFolder
from zoo.spec import ModelJob, ZooSpec


@dataclass(frozen=True)
class Shrink:
    """Committed data that a smaller spec leaves out.

    Attributes:
        seeds: seeds of the zoo's spec that the new spec lacks.
        values: grid axis ("grid.load (width)") -> its values that the new spec lacks.
        cell_ids: committed cells that lose models (all of them, or the dropped seeds').
        kept_cells: those of `cell_ids` still in the new grid; they train again with the
            seeds they keep (the same weights: seeds drive everything).
        models: committed models that go; rows: their model rows.
    """

    seeds: tuple[int, ...]
    values: dict[str, tuple[Any, ...]]
    cell_ids: frozenset[str]
    kept_cells: frozenset[str]
    models: int
    rows: int

    def what(self) -> str:
        """The dropped seeds and grid values in words."""
        parts = [f"seeds {', '.join(map(str, self.seeds))}"] if self.seeds else []
        parts += [f"{axis} values {', '.join(map(str, values))}"
                  for axis, values in self.values.items() if values]
        return " and ".join(parts) or "nothing"

    def counts(self) -> str:
        """How much goes: cells, models, model rows, and the cells that train again."""
        again = len(self.kept_cells)
        return (f"{_count(len(self.cell_ids), 'cell')}, {_count(self.models, 'model')}, "
                f"{_count(self.rows, 'model row')}"
                + (f" (the seeds they keep train again in {again} of them)" if again else ""))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _axis_values(resolved: dict[str, Any], spec: ZooSpec) -> dict[str, tuple[Any, ...]]:
    """Values of each grid axis in the zoo's resolved spec that `spec` lacks."""
    out = {}
    for key, axis in (("load", spec.load_axis), ("temperature", spec.temperature_axis)):
        old = resolved[f"{key}_axis"]["values"]
        out[f"grid.{key} ({axis.name})"] = tuple(v for v in old if v not in axis.values)
    return out


def _seeds_of(folder: ZooFolder, path: str) -> list[int]:
    """The seed of every row of a committed models shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with folder.open_read(path) as handle:  # a FIFO or folder is refused, not waited on
            return pq.read_table(handle, columns=["seed"]).column("seed").to_pylist()
    except (OSError, ValueError, KeyError, pa.ArrowException) as error:
        raise ZooFolderError(f"{folder}/{path}: cannot read its seed column ({error}); run "
                             f"`zoo verify` on the folder") from None


def find_shrink(folder: ZooFolder, previous: dict[str, Any], spec: ZooSpec, manifest: Manifest,
                cells: dict[str, list[ModelJob]]) -> Shrink | None:
    """What `spec` drops from the committed zoo in `folder` (None when it drops nothing).

    Args:
        previous: the zoo's resolved spec (zoo.json's "spec").
        cells: the new spec's jobs by cell id.
    """
    dropped_seeds = tuple(s for s in previous["seeds"] if s not in spec.seeds)
    values = _axis_values(previous, spec)
    if not dropped_seeds and not any(values.values()):
        return None
    gone, kept, models, rows = set(), set(), 0, 0
    committed = manifest.cell_ids()
    seeds: dict[str, list[int]] = {}  # a cell's rows may span several shards
    for shard in manifest.shards_of("models"):
        if shard.cell_id in committed and (shard.cell_id not in cells or dropped_seeds):
            seeds.setdefault(shard.cell_id, []).extend(_seeds_of(folder, shard.path))
    for cell_id, found in seeds.items():
        lost = found if cell_id not in cells else [s for s in found if s not in spec.seeds]
        if lost:
            gone.add(cell_id)
            if cell_id in cells:
                kept.add(cell_id)
            models, rows = models + len(set(lost)), rows + len(lost)
    if not gone:
        return None
    return Shrink(dropped_seeds, values, frozenset(gone), frozenset(kept), models, rows)


def refuse_shrink(out: object, shrink: Shrink) -> ZooFolderError:
    """The one-line error for a smaller spec given without --prune."""
    return ZooFolderError(
        f"{out}: this spec drops {shrink.what()} from the zoo there, which would delete "
        f"{shrink.counts()}; rerun with --prune to delete them, or keep them in the spec")


def prune(folder: ZooFolder, shrink: Shrink, spec_hash: str) -> Manifest:
    """Remove the dropped cells from the manifest (written first), then delete their files.

    The new manifest carries `spec_hash`, the smaller spec's: it lists no model outside it.

    Returns:
        the new manifest.
    """
    manifest = folder.manifest()
    assert manifest is not None, "a plan with a shrink comes from a zoo with a manifest"
    going = [s.path for s in manifest.shards if s.cell_id in shrink.cell_ids]
    for path in going:
        folder.check(path)
    pruned = dataclasses.replace(
        manifest, spec_hash=spec_hash,
        shards=tuple(s for s in manifest.shards if s.cell_id not in shrink.cell_ids))
    try:
        folder.write_manifest(pruned)
        for path in going:
            folder.delete(path)
        for cell_id in shrink.cell_ids:
            folder.delete(f"{FAILURES}/{cell_id}.json")
    except OSError as error:
        raise ZooFolderError(f"{error.filename or folder.root}: cannot prune "
                             f"({error.strerror or error})") from error
    return pruned
