"""What a generation run has to do: the cells of a spec, and which are already committed."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generators.executor import Task
from generators.shrink import Shrink, find_shrink, refuse_shrink
from zoo.datasets.base import DataBundle
from zoo.errors import SpecError, ZooFolderError
from zoo.folder.manifest import Manifest
from zoo.folder.zoofolder import ZooFolder
from zoo.spec import ModelJob, ZooSpec

@dataclass(frozen=True)
class Plan:
    """Jobs grouped by cell, the cells already committed, and whether the zoo grows."""

    spec: ZooSpec
    cells: dict[str, tuple[ModelJob, ...]]
    done: frozenset[str]
    grows: bool = False
    stacked: dict[str, bool] = field(default_factory=dict)  # how held cells were trained
    shrink: Shrink | None = None  # what --prune removes before training

    @property
    def missing(self) -> dict[str, tuple[ModelJob, ...]]:
        return {cid: jobs for cid, jobs in self.cells.items() if cid not in self.done}

    @property
    def num_models(self) -> int:
        return sum(len(jobs) for jobs in self.cells.values())

    @property
    def kept_epochs(self) -> int:
        """How many checkpoints each model keeps."""
        return len(self.spec.kept_epochs)

    def describe(self, params_by_width: dict[int, int], formats: int) -> str:
        """A short human summary (used by --dry-run and at the start of a run)."""
        spec = self.spec
        rows = self.num_models * self.kept_epochs
        bytes_ = sum(params_by_width[jobs[0].cell.width] * len(jobs) for jobs in
                     self.cells.values()) * self.kept_epochs * 4 * formats
        grows = " (growing an existing zoo: new seeds or grid values)" if self.grows else ""
        if self.shrink is not None:
            grows = f" (pruning {self.shrink.what()}: {self.shrink.counts()} go)"
        return (f"zoo {spec.name}: {len(self.cells)} cells "
                f"({len(spec.load_axis.values)} {spec.load_axis.name} × "
                f"{len(spec.temperature_axis.values)} {spec.temperature_axis.name}) × "
                f"{len(spec.seeds)} seeds = {self.num_models} models, "
                f"{rows} model rows, ~{_size(bytes_)} of weights; "
                f"{len(self.done)} cells done, {len(self.missing)} to run{grows}")


def _without_growth(spec: dict[str, Any]) -> dict[str, Any]:
    """The resolved spec less what a zoo may grow by: seeds, grid values, the description."""
    body = json.loads(json.dumps(spec))
    for key in ("seeds", "description"):
        body.pop(key, None)
    body["load_axis"].pop("values")
    body["temperature_axis"].pop("values")
    return body


def _finished(manifest: Manifest, cells: dict[str, list[ModelJob]], kept: int) -> frozenset:
    """Cells whose cells row is committed with models shards holding every seed's rows."""
    rows: dict[str, int] = {}
    for shard in manifest.shards_of("models"):  # a cell's rows may span several shards
        rows[shard.cell_id] = rows.get(shard.cell_id, 0) + shard.rows
    return frozenset(cid for cid in manifest.cell_ids() & set(cells)
                     if rows.get(cid) == len(cells[cid]) * kept)


def make_plan(spec: ZooSpec, fingerprint: str, out: ZooFolder | Path | None, *,
              prune: bool = False) -> Plan:
    """Group the spec's jobs by cell and find what `out` already holds (None: nothing, for a
    dry run that has not looked at the folder).

    A folder holding a zoo of another spec is refused; one whose spec differs only in seeds or
    grid values grows (cells that gain seeds are trained again, to the same weights). A spec
    that leaves out seeds or grid values the zoo holds is refused unless `prune`; the plan
    then carries the `Shrink` that `generators.shrink.prune` applies.
    """
    cells: dict[str, list[ModelJob]] = {}
    for job in spec.jobs(fingerprint):
        cells.setdefault(job.cell_id, []).append(job)
    plan = Plan(spec, {cid: tuple(jobs) for cid, jobs in cells.items()}, frozenset())
    if out is None:
        return plan
    folder = ZooFolder.of(out)
    out = folder  # in messages: its path, or its URI
    if folder.is_empty():
        return plan
    previous = folder.record()
    if previous is None:
        raise ZooFolderError(f"{out}: exists, is not empty and is not a zoo folder")
    if previous.spec_hash != spec.spec_hash():
        if _without_growth(previous.spec) != _without_growth(spec.to_dict()) or \
                previous.data_fingerprint != fingerprint:
            raise ZooFolderError(
                f"{out}: holds a zoo of another spec (spec hash {previous.spec_hash}, this "
                f"spec {spec.spec_hash()}); only seeds and grid values may change to grow a "
                f"zoo; choose another --out folder")
    manifest = folder.manifest()
    if manifest is None:
        return plan
    changed = previous.spec_hash != spec.spec_hash()
    shrink = find_shrink(folder, previous.spec, spec, manifest, cells) if changed else None
    if shrink is not None and not prune:
        raise refuse_shrink(out, shrink)
    held = manifest
    if shrink is not None:
        held = dataclasses.replace(manifest, shards=tuple(
            s for s in manifest.shards if s.cell_id not in shrink.cell_ids))
    done = _finished(held, cells, plan.kept_epochs)
    stacked = {cid: way for cid, way in held.stacked.items() if cid in cells and cid not in done}
    return Plan(plan.spec, plan.cells, done, grows=changed, stacked=stacked, shrink=shrink)


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def plan_tasks(plan: Plan, bundle: DataBundle, workers: int,
               device: str = "cpu") -> list[Task]:
    """Group the missing cells into Ray tasks, deciding here, once, which train stacked.

    Cells that differ only in learning rate or weight decay train as one population when the
    cost model for `device` (the device the tasks ask for: "cuda" when they ask for GPUs),
    applied to the whole group as the spec defines it (so a resumed run decides alike), says
    stacking pays; groups are halved while there are fewer tasks than `workers`. Other cells
    are decided one by one. Cells a growing zoo already holds keep the way the manifest records.
    """
    groups: dict[tuple, list[str]] = {}
    for cell_id, jobs in plan.cells.items():
        cell = jobs[0].cell
        groups.setdefault((cell.width, cell.batch_size, cell.data_fraction, cell.beta),
                          []).append(cell_id)
    tasks, grouped = [], []
    for members in groups.values():
        missing = [cid for cid in members if cid in plan.missing]
        tasks += [Task((plan.cells[cid],), plan.stacked[cid]) for cid in missing
                  if cid in plan.stacked]
        fresh = [plan.cells[cid] for cid in missing if cid not in plan.stacked]
        if len(members) > 1 and fresh and _stacks(plan, members, bundle, device):
            grouped.append(fresh)
        else:
            tasks += [Task((jobs,), _stacks(plan, [jobs[0].cell_id], bundle, device))
                      for jobs in fresh]
    while grouped and len(tasks) + len(grouped) < workers and max(map(len, grouped)) > 1:
        largest = max(grouped, key=len)
        grouped.remove(largest)
        grouped += [largest[:len(largest) // 2], largest[len(largest) // 2:]]
    return [Task(tuple(cells), True) for cells in grouped] + tasks


def _stacks(plan: Plan, members: list[str], bundle: DataBundle, device: str) -> bool:
    from zoo.train import choose_stacking

    jobs = [job for cid in members for job in plan.cells[cid]]
    try:
        return choose_stacking(plan.spec, jobs, bundle, device)
    except ValueError as error:
        raise SpecError(f"training.stacking: {plan.spec.training.stacking!r} is not possible "
                        f"here ({error})") from None
