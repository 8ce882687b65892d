"""`zoo generate`: load the data, plan, train the missing cells on Ray, commit, write the card."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, TextIO

import torch

from generators.executor import CellFailure, TaskOutcome, ensure_ray, run_tasks
from generators.plan import Plan, check_out, make_plan, plan_tasks
from generators.shrink import prune as prune_cells
from zoo import architectures, datasets, limits
from zoo.datasets.base import DataBundle, DataInfo
from zoo.folder.card import write_card
from zoo.folder.manifest import read_manifest
from zoo.folder.names import write_atomically
from zoo.folder.record import ZooRecord, versions
from zoo.folder.writer import FORMATS, ZooWriter
from zoo.spec import ZooSpec


FAILURES = "failures"  # folder of <cell_id>.json records of cells whose training raised
STATE = "state"  # folder of training states of models in progress (zoo.trainstate)


@dataclass
class Generation:
    """What a run did: its plan, the cells it committed and failed, the Ray nodes it used."""

    plan: Plan
    committed: int = 0
    failures: list[CellFailure] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)


def count_parameters(spec: ZooSpec, info: DataInfo) -> dict[int, int]:
    """Stored values per checkpoint for each width, built on the meta device (no memory).

    Raises:
        SpecError: a width whose checkpoint exceeds `limits.MAX_PARAMETERS` values.
    """
    counts = {}
    for width in sorted({cell.width for cell in spec.cells()}):
        with torch.device("meta"):
            model = architectures.build(spec.architecture.family, width=width,
                                        info=info, args=spec.architecture.args)
        counts[width] = sum(t.numel() for t in model.state_dict().values())
    fields = {spec.architecture.width: "architecture.width"}
    if spec.load_axis.name in ("width", "model_dim"):
        fields = {int(v): f"grid.load.values[{i}]" for i, v in enumerate(spec.load_axis.values)}
    limits.check_parameters(counts, fields)
    return counts


def load_data(spec: ZooSpec) -> DataBundle:
    """The spec's data set, fully in memory."""
    return datasets.load(spec.data.name, root=spec.data.root, args=spec.data.args)


def generate(spec: ZooSpec, out: Path, *, address: str | None = None,
             workers: int | None = None, formats: Iterable[str] = FORMATS,
             gpus_per_task: float = 0.0, dry_run: bool = False, progress: bool = True,
             stream: TextIO | None = None, prune: bool = False) -> Generation:
    """Generate (or complete, or grow) the zoo of `spec` in `out`; only missing cells train.

    A cell whose training raises is recorded in failures/<cell_id>.json and the run goes on;
    the caller decides the exit code from `Generation.failures`. A spec with fewer seeds or
    grid values than the zoo in `out` is refused unless `prune`, which removes what it drops.
    """
    stream = stream or sys.stderr
    formats = tuple(formats)
    counts = count_parameters(spec, datasets.describe(spec.data.name, spec.data.args))
    check_out(out)
    if dry_run and spec.data.root is None and datasets.needs_root(spec.data.name):
        plan = make_plan(spec, "(data not loaded)", Path("/nonexistent"))
        print(plan.describe(counts, len(formats)), file=stream)
        return Generation(plan)
    bundle = load_data(spec)
    fingerprint = bundle.fingerprint()
    plan = make_plan(spec, fingerprint, out, prune=prune)
    print(plan.describe(counts, len(formats)), file=stream)
    generation = Generation(plan)
    if dry_run:
        return generation
    if plan.shrink is not None:
        prune_cells(out, read_manifest(out), plan.shrink, spec.spec_hash())
        print(f"pruned {plan.shrink.what()} from {out}: {plan.shrink.counts()}", file=stream)
    writer = ZooWriter(out, spec.spec_hash(), formats)
    writer.start(ZooRecord(spec.to_dict(), spec.spec_hash(), fingerprint, versions(),
                           bundle.info, normalization=bundle.normalization))
    if plan.missing:
        from tqdm import tqdm

        ensure_ray(address, workers)
        import ray

        tasks = plan_tasks(plan, bundle, workers or int(ray.available_resources().get("CPU", 1)),
                           "cuda" if gpus_per_task > 0 else "cpu")
        done_models = plan.num_models - sum(len(j) for j in plan.missing.values())
        with tqdm(total=plan.num_models, initial=done_models, unit="model", file=stream,
                  desc=f"zoo {spec.name}", disable=not progress) as bar:
            def record(outcome: TaskOutcome) -> None:
                generation.nodes.add(outcome.node_id)
                cell_id = (outcome.result or outcome.failure).cell_id
                failure_file = out / FAILURES / f"{cell_id}.json"
                if outcome.failure is not None:
                    generation.failures.append(outcome.failure)
                    failure_file.parent.mkdir(exist_ok=True)
                    write_atomically(failure_file, json.dumps(asdict(outcome.failure),
                                                              indent=1).encode())
                    bar.write(f"cell {outcome.failure.cell_id} failed: {outcome.failure.error}")
                    return
                writer.commit(outcome.result)
                failure_file.unlink(missing_ok=True)
                generation.committed += 1
                bar.update(len({row["model_id"] for row in outcome.result.models}))

            run_tasks(spec, tasks, bundle, workers=workers, gpus_per_task=gpus_per_task,
                      on_outcome=record, state_folder=out.resolve() / STATE)
    if generation.committed or plan.shrink is not None or not (out / "README.md").exists():
        write_card(out)
    return generation
