"""`zoo generate`: load the data, plan, train the missing cells on Ray, commit, write the card."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, TextIO

import torch

from generators.executor import (CellFailure, TaskOutcome, WorkerData, WorkerPool, ensure_ray,
                                 run_tasks, worker_slots)
from generators.packing import auto_gpus_per_task, device_memory
from generators.plan import Plan, make_plan, plan_tasks
from generators.shrink import prune as prune_cells
from zoo import architectures, dataroot, datasets, limits
from zoo.cell import CellOutput
from zoo.datasets.base import DataBundle, DataInfo
from zoo.errors import ZooError
from zoo.folder.modelshards import INLINE_BYTES
from zoo.folder.shardbytes import SHARD_BYTES
from zoo.folder.names import FAILURES, README, SPOOL, STATE
from zoo.folder.record import ZooRecord, versions
from zoo.folder.writer import FORMATS, ZooWriter
from zoo.folder.storefolder import StoreFolder, open_folder, writer_lock
from zoo.folder.storestates import StoreStates
from zoo.folder.zoofolder import ZooFolder
from zoo.precision import precision_record
from zoo.printable import printable
from zoo.spec import ZooSpec


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
    return dataroot.load(spec.data.name, root=spec.data.root, args=spec.data.args)


def _load_while_ray_starts(spec: ZooSpec, address: str | None, workers: int | None,
                           gpus_per_task: float | str
                           ) -> tuple[DataBundle, int, WorkerPool | None]:
    """The data, loaded on a thread while Ray starts on this one (Ray's processes die with the
    thread that started them, so Ray keeps the main thread); the workers the plan counts on
    (`workers`, else the free CPUs before any worker takes one); and the workers, started at
    once so they import torch while this process loads and plans (with --gpus-per-task auto
    they start once the plan has sized them)."""
    from concurrent.futures import ThreadPoolExecutor

    import ray

    with ThreadPoolExecutor(1) as loader:
        loading = loader.submit(load_data, spec)
        ensure_ray(address, workers)
        planned = workers or int(ray.available_resources().get("CPU", 1))
        pool = None
        if gpus_per_task != "auto":
            pool = WorkerPool(min(worker_slots(workers, gpus_per_task), len(spec.cells())),
                              gpus_per_task)
        try:
            return loading.result(), planned, pool
        except BaseException:
            if pool is not None:
                pool.close()
            raise


def generate(spec: ZooSpec, out: str | Path, *, address: str | None = None,
             workers: int | None = None, formats: Iterable[str] = FORMATS,
             gpus_per_task: float | str = 0.0, dry_run: bool = False, progress: bool = True,
             stream: TextIO | None = None, prune: bool = False,
             inline_bytes: int = INLINE_BYTES, shard_bytes: int = SHARD_BYTES) -> Generation:
    """Generate (or complete, or grow) the zoo of `spec` in `out` (a folder, or a URI such as
    s3://bucket/prefix: zoo.folder.storefolder); only missing cells train.

    A cell whose training raises is recorded in failures/<cell_id>.json and the run goes on;
    the caller decides the exit code from `Generation.failures`. A spec with fewer seeds or
    grid values than the zoo in `out` is refused unless `prune`, which removes what it drops.
    `gpus_per_task` "auto" sizes the fraction from a memory estimate of the largest task
    (generators.packing). Checkpoints larger than `inline_bytes` go to per-model HDF5 files
    instead of the row; every models file holds at most `shard_bytes` (or one row larger
    than that: zoo.folder.shardbytes). One writer per folder: a second run on `out` raises FolderLocked
    (zoo.folder.lock).
    """
    stream = stream or sys.stderr
    formats = tuple(formats)
    if not (isinstance(inline_bytes, int) and inline_bytes >= 0):
        raise ZooError(f"--inline-bytes: {inline_bytes!r} is not allowed; expected an "
                       f"integer >= 0")
    if isinstance(shard_bytes, bool) or not (isinstance(shard_bytes, int) and shard_bytes >= 1):
        raise ZooError(f"--shard-bytes: {shard_bytes!r} is not allowed; expected an "
                       f"integer >= 1")
    counts = count_parameters(spec, datasets.describe(spec.data.name, spec.data.args))
    folder = open_folder(out)  # refuses a file; read once: a broken zoo.json fails before data
    folder.record()
    settings = dict(address=address, workers=workers, formats=formats,
                    gpus_per_task=gpus_per_task, dry_run=dry_run, progress=progress,
                    stream=stream, prune=prune, inline_bytes=inline_bytes,
                    shard_bytes=shard_bytes)
    if dry_run:
        return _generate(spec, folder, counts, None, **settings)
    with writer_lock(folder, on_stale=lambda line: print(line, file=stream)), \
            ExitStack() as stack:
        return _generate(spec, folder, counts, stack, **settings)


def _generate(spec: ZooSpec, folder: ZooFolder, counts: dict[int, int],
              stack: ExitStack | None, *,
              address: str | None,
              workers: int | None, formats: tuple[str, ...], gpus_per_task: float,
              dry_run: bool, progress: bool, stream: TextIO, prune: bool,
              inline_bytes: int, shard_bytes: int) -> Generation:
    """generate() once the folder is locked (or for a dry run, which writes nothing); the
    workers started early are closed by `stack`."""
    out = folder.root  # the scratch folder of a zoo on a store
    if dry_run and spec.data.root is None and datasets.needs_root(spec.data.name):
        plan = make_plan(spec, "(data not loaded)", None)
        print(plan.describe(counts, len(formats)), file=stream)
        return Generation(plan)
    device_bytes = device_memory() if gpus_per_task == "auto" and not dry_run else 0
    bundle, planned, pool = (load_data(spec), 0, None) if dry_run or stack is None else \
        _load_while_ray_starts(spec, address, workers, gpus_per_task)
    if pool is not None:
        stack.callback(pool.close)
    fingerprint = bundle.fingerprint()
    plan = make_plan(spec, fingerprint, folder, prune=prune)
    print(plan.describe(counts, len(formats)), file=stream)
    generation = Generation(plan)
    if dry_run:
        return generation
    if plan.shrink is not None:
        prune_cells(folder, plan.shrink, spec.spec_hash())
        print(f"pruned {plan.shrink.what()} from {folder}: {plan.shrink.counts()}", file=stream)
    writer = ZooWriter(folder, spec.spec_hash(), formats, inline_bytes, shard_bytes)
    removed = writer.start(ZooRecord(spec.to_dict(), spec.spec_hash(), fingerprint, versions(),
                                     bundle.info, normalization=bundle.normalization,
                                     precision=precision_record(
                                         spec.training.precision,
                                         "cpu" if gpus_per_task == 0 else "cuda",
                                         spec.training.deterministic)))
    if removed:
        print(f"removed {len(removed)} unlisted files of an interrupted run from {folder}",
              file=stream)
    if plan.missing:
        from tqdm import tqdm

        device = "cpu" if gpus_per_task == 0 else "cuda"
        tasks = plan_tasks(plan, bundle, planned, device)
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
                failure_file = f"{FAILURES}/{cell_id}.json"
                if outcome.failure is not None:
                    generation.failures.append(outcome.failure)
                    folder.write(failure_file, json.dumps(asdict(outcome.failure),
                                                          indent=1).encode())
                    bar.write(f"cell {outcome.failure.cell_id} failed: {outcome.failure.error}")
                    return
                for note in outcome.result.notes:
                    bar.write(f"warning: {printable(note)}", file=stream)
                writer.commit(outcome.result)
                folder.delete(failure_file)
                generation.committed += 1
                bar.update(len({row["model_id"] for row in outcome.result.models}))

            # folder data sets: each worker reads data.root itself (a shared filesystem)
            data = WorkerData(None if datasets.needs_root(spec.data.name) else bundle,
                              fingerprint)
            folder.makedirs(SPOOL)  # workers write below: no link on the way, none inside
            folder.check_tree(STATE)
            state: Path | StoreStates
            if isinstance(folder, StoreFolder):  # workers write through scratches of their own
                output = CellOutput(folder, StoreFolder(f"{folder.url}/{SPOOL}"), inline_bytes,
                                    "hdf5" in formats, shard_bytes)
                state = StoreStates(f"{folder.url}/{STATE}")  # a retry on any node resumes
            else:
                output = CellOutput(out.resolve(), out.resolve() / SPOOL, inline_bytes,
                                    "hdf5" in formats, shard_bytes)
                state = out.resolve() / STATE
            run_tasks(spec, tasks, data, workers=workers, gpus_per_task=gpus_per_task,
                      on_outcome=record, state_folder=state, output=output, pool=pool)
    held = folder.manifest()
    if generation.committed or plan.shrink is not None or not (out / README).exists() or (
            held is not None and (held.retired or held.previous)):  # a killed commit's card
        from zoo.folder.card import write_card  # imports the readers: only at the end

        write_card(folder)
    return generation
