"""`zoo generate`: load the data, plan, train the missing cells on Ray, commit, write the card."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, TextIO

import torch

import zoo
from generators.executor import CellFailure, TaskOutcome, ensure_ray, run_tasks
from generators.packing import auto_gpus_per_task, device_memory
from generators.plan import Plan, make_plan, plan_tasks
from generators.writer import FORMATS, ZooWriter
from zoo import architectures, datasets
from zoo.datasets.base import DataBundle, DataInfo
from zoo.folder import write_atomically
from zoo.precision import precision_record
from zoo.spec import ZooSpec


FAILURES = "failures"  # folder of <cell_id>.json records of cells whose training raised


@dataclass
class Generation:
    """What a run did: its plan, the cells it committed and failed, the Ray nodes it used."""

    plan: Plan
    committed: int = 0
    failures: list[CellFailure] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)


def versions() -> dict[str, str]:
    """Versions of the code and libraries that produce a zoo."""
    import pyarrow
    import ray

    return {"phase_zoo": zoo.__version__, "torch": torch.__version__, "ray": ray.__version__,
            "pyarrow": pyarrow.__version__, "python": platform.python_version()}


def count_parameters(spec: ZooSpec, info: DataInfo) -> dict[int, int]:
    """Stored values per checkpoint for each width, built on the meta device (no memory)."""
    counts = {}
    for width in sorted({cell.width for cell in spec.cells()}):
        with torch.device("meta"):
            model = architectures.build(spec.architecture.family, width=width,
                                        info=info, args=spec.architecture.args)
        counts[width] = sum(t.numel() for t in model.state_dict().values())
    return counts


def load_data(spec: ZooSpec) -> DataBundle:
    """The spec's data set, fully in memory."""
    return datasets.load(spec.data.name, root=spec.data.root, args=spec.data.args)


def _load_while_ray_starts(spec: ZooSpec, address: str | None,
                           workers: int | None) -> DataBundle:
    """The data, loaded on a thread while Ray starts on this one (Ray's processes die with the
    thread that started them, so Ray keeps the main thread)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(load_data, spec)
        ensure_ray(address, workers)
        return loading.result()


def generate(spec: ZooSpec, out: Path, *, address: str | None = None,
             workers: int | None = None, formats: Iterable[str] = FORMATS,
             gpus_per_task: float | str = 0.0, dry_run: bool = False, progress: bool = True,
             stream: TextIO | None = None) -> Generation:
    """Generate (or complete, or grow) the zoo of `spec` in `out`; only missing cells train.

    A cell whose training raises is recorded in failures/<cell_id>.json and the run goes on;
    the caller decides the exit code from `Generation.failures`. `gpus_per_task` "auto" sizes
    the fraction from a memory estimate of the largest task (generators.packing).
    """
    stream = stream or sys.stderr
    formats = tuple(formats)
    if dry_run and spec.data.root is None and datasets.needs_root(spec.data.name):
        plan = make_plan(spec, "(data not loaded)", Path("/nonexistent"))
        info = datasets.describe(spec.data.name, spec.data.args)
        print(plan.describe(count_parameters(spec, info), len(formats)), file=stream)
        return Generation(plan)
    device_bytes = device_memory() if gpus_per_task == "auto" and not dry_run else 0
    bundle = load_data(spec) if dry_run else _load_while_ray_starts(spec, address, workers)
    fingerprint = bundle.fingerprint()
    plan = make_plan(spec, fingerprint, out)
    print(plan.describe(count_parameters(spec, bundle.info), len(formats)), file=stream)
    generation = Generation(plan)
    if dry_run:
        return generation
    writer = ZooWriter(out, spec.spec_hash(), formats)
    writer.start({"spec": spec.to_dict(), "spec_hash": spec.spec_hash(),
                  "data_fingerprint": fingerprint, "versions": versions(),
                  "precision": precision_record(spec.training.precision)})
    if plan.missing:
        from tqdm import tqdm

        import ray

        tasks = plan_tasks(plan, bundle, workers or int(ray.available_resources().get("CPU", 1)))
        if gpus_per_task == "auto":
            gpus_per_task = auto_gpus_per_task(spec, tasks, bundle, device_bytes)
            print(f"each task asks for {gpus_per_task:g} of a GPU (--gpus-per-task auto)",
                  file=stream)
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
                      on_outcome=record)
    if generation.committed or not (out / "README.md").exists():
        from generators.card import write_card  # imports the readers: only at the end

        write_card(out)
    return generation
