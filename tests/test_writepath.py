"""The write path: workers write checkpoints (inline or per-model HDF5), the driver commits,
one writer per folder, leftovers of a killed run removed, data loaded on workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from analysis.verify import verify
from generators.cli import main
from generators.executor import WorkerData
from generators.generate import generate
from loaders.dataset import ZooDataset
from loaders.models import load_model
from tests.conftest import write_spec
from zoo import datasets
from zoo.cell import CellOutput, run_cell_group
from zoo.errors import DataError, IntegrityError
from zoo.folder.checkpoints import read_checkpoint
from zoo.folder.lock import FolderLock, FolderLocked
from zoo.folder.names import CHECKPOINTS_FOLDER, LOCK
from zoo.folder.reader import ZooReader
from zoo.folder.writer import ZooWriter
from zoo.layout import layout_of
from zoo.specfile import load_spec
from zoo.train import Spool, build_model, train_model

RESNET = {
    "name": "resnet-digits",
    "architecture": {"family": "resnet18", "width": 2},
    "data": {"name": "digits"},
    "training": {"epochs": 2, "learning_rate": 0.05},
    "grid": {"load": {"axis": "width", "values": [1, 2]},
             "temperature": {"axis": "batch_size", "values": [512]}},
    "seeds": [0, 1],
    "checkpoints": {"every": 1},
    "metrics": {"epochs": ["last"], "hessian": {"batches": 1, "batch_size": 16, "max_iter": 3},
                "similarity": {"batches": 1, "batch_size": 32},
                "curve": {"steps": 2, "batch_size": 32, "points": 3}},
}


@pytest.fixture(scope="module")
def resnet_zoo(tmp_path_factory, ray_runtime) -> Path:
    """A ResNet-18 zoo on digits whose checkpoints all go to per-model HDF5 files."""
    folder = tmp_path_factory.mktemp("resnet")
    spec = load_spec(write_spec(folder, **RESNET))
    out = folder / "zoo"
    result = generate(spec, out, workers=2, progress=False, inline_bytes=1)
    assert not result.failures, result.failures
    return out


def _spec(folder: Path):
    return load_spec(write_spec(folder, **RESNET))


def test_large_checkpoints_go_to_per_model_hdf5_files(resnet_zoo):
    reader = ZooReader(resnet_zoo)
    files = reader.manifest.shards_of("models", "checkpoints")
    assert len(files) == 2 * 2  # one file per model: 2 cells x 2 seeds
    assert all(s.path.startswith(CHECKPOINTS_FOLDER + "/") and s.rows == 3 for s in files)
    assert reader.manifest.shards_of("models", "hdf5") == []  # large cells: no cell HDF5
    models = reader.table("models").to_pylist()
    assert len(models) == 4 * 3 and all(r["weights"] == b"" for r in models)
    assert {r["weights_file"] for r in models} == {s.path for s in files}
    with h5py.File(resnet_zoo / files[0].path) as handle:
        assert list(handle["epoch"][:]) == [0, 1, 2]
        conv = handle["weights"]["conv1.weight"]
        assert conv.chunks == (1, *conv.shape[1:])  # one chunk per kept epoch
    assert not (resnet_zoo / LOCK).exists()


def test_hdf5_checkpoints_load_back_exactly(resnet_zoo, tmp_path):
    torch.set_num_threads(1)
    spec = _spec(tmp_path)
    bundle = datasets.load("digits")
    job = next(j for j in spec.jobs(bundle.fingerprint()) if j.seed == 1 and j.cell.width == 2)
    trained = train_model(spec, job, bundle)
    model = build_model(spec, job.cell, bundle, job.seed)
    layout = layout_of(model, "resnet18", 2, {})
    expected = {c.epoch: layout.flatten(c.state_dict) for c in trained.checkpoints}
    dataset = ZooDataset(resnet_zoo, split="all", epochs="all", where={"model_id": job.model_id},
                         counters=True)
    assert len(dataset) == 3
    for i in range(len(dataset)):
        item = dataset[i]
        np.testing.assert_array_equal(item["weights"].numpy(), expected[item["epoch"]])
    loaded = load_model(resnet_zoo, job.model_id, 2)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, trained.checkpoints[-1].state_dict[name]), name


def test_a_resnet_zoo_with_hdf5_checkpoints_verifies(resnet_zoo):
    assert verify(resnet_zoo, recompute_count=2) == []


def test_studies_rebuild_hdf5_checkpoints_that_reproduce_their_metrics(resnet_zoo):
    from analysis.studies.common import StudyZoo

    torch.set_num_threads(1)
    study = StudyZoo(resnet_zoo)
    last = [i for i, e in enumerate(study.columns["epoch"]) if e == 2]
    for index, model in zip(last, study.models(last)):
        assert study.objective(index).evaluate(model, "test")["loss"] == \
            study.row(index)["test_loss"]


def test_hugging_face_load_dataset_gives_the_checkpoint_file_columns(resnet_zoo, tmp_path):
    code = ("import datasets, sys; d = datasets.load_dataset(sys.argv[1], cache_dir=sys.argv[2]);"
            "rows = [r for p in d.values() for r in p];"
            "print(len(rows), {len(r['weights']) for r in rows}, "
            "all(r['weights_file'].startswith('hdf5/models/') for r in rows))")
    out = subprocess.run([sys.executable, "-c", code, str(resnet_zoo), str(tmp_path / "cache")],
                         capture_output=True, text=True, env={"HF_DATASETS_OFFLINE": "1",
                                                               "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "12 {0} True"


def test_a_tampered_checkpoint_file_is_named(resnet_zoo, tmp_path):
    reader = ZooReader(resnet_zoo)
    row = reader.table("models").to_pylist()[0]
    layout = reader.layout(row["layout"])
    copy = tmp_path / "copy"
    (copy / CHECKPOINTS_FOLDER).mkdir(parents=True)
    target = copy / row["weights_file"]
    target.write_bytes((resnet_zoo / row["weights_file"]).read_bytes())
    with h5py.File(target, "r+") as handle:
        handle["weights"]["fc.bias"][row["weights_index"]] += 1.0
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        read_checkpoint(copy, row["weights_file"], row["weights_index"], row["weights_sha256"],
                        layout)


def test_small_checkpoints_stay_inline_with_the_cell_joined_columns(tiny_zoo):
    reader = ZooReader(tiny_zoo)
    assert reader.manifest.shards_of("models", "checkpoints") == []
    models = reader.table("models", columns=["weights", "weights_file", "cell_id", "phase"])
    assert all(len(w) > 0 for w in models.column("weights").to_pylist())
    assert set(models.column("weights_file").to_pylist()) == {None}
    cells = dict(zip(*reader.table("cells", columns=["cell_id", "phase"]).to_pydict().values()))
    assert all(cells[c] == p for c, p in zip(models.column("cell_id").to_pylist(),
                                             models.column("phase").to_pylist()))


def test_workers_return_rows_without_weights_and_spool_their_checkpoints(tmp_path):
    spec = load_spec(write_spec(tmp_path, training={"epochs": 2, "learning_rate": 0.05}))
    bundle = datasets.load("mnist1d")
    cells: dict = {}
    for job in spec.jobs(bundle.fingerprint()):
        cells.setdefault(job.cell_id, []).append(job)
    jobs = list(cells.values())[0]
    output = CellOutput(tmp_path / "zoo", tmp_path / "spool", inline_bytes=1 << 20)
    (result,) = run_cell_group(spec, [jobs], bundle, "cpu", False, None, output)
    assert all(row["weights"] is None for row in result.models)
    assert {s.table for s in result.files} == {"models"}
    assert {s.format for s in result.files} == {"parquet", "hdf5"}
    assert all((output.root / s.path).exists() for s in result.files)
    files = sorted(p.name for p in (tmp_path / "spool" / jobs[0].model_id).iterdir())
    assert files == [f"checkpoint-{e}.safetensors" for e in (0, 1, 2)]


def test_training_with_a_spool_holds_no_weights(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    bundle = datasets.load("mnist1d")
    job = spec.jobs(bundle.fingerprint())[0]
    spool = Spool(tmp_path / "spool")
    kept = train_model(spec, job, bundle, hand_off=spool.hand_off(job.model_id))
    plain = train_model(spec, job, bundle)
    assert all(c.state_dict == {} for c in kept.checkpoints)
    for a, b in zip(kept.checkpoints, plain.checkpoints):
        assert (a.epoch, a.train, a.test, a.finite) == (b.epoch, b.train, b.test, b.finite)
        saved = spool.load(job.model_id, b.epoch, list(b.state_dict))
        assert all(torch.equal(saved[k], v) for k, v in b.state_dict.items())
    spool.clear([job.model_id])
    assert not spool.folder.exists()


def test_a_spooled_run_saves_no_empty_checkpoint_twins_and_resumes_identically(tmp_path):
    from zoo.train.state import STATE_JSON, StateStore, load_state

    class Killed(Exception):
        pass

    def kill_at_3(finished: int) -> None:
        if finished == 3:
            raise Killed

    spec = load_spec(write_spec(tmp_path, training={"epochs": 3, "learning_rate": 0.05}))
    bundle = datasets.load("mnist1d")
    job = spec.jobs(bundle.fingerprint())[0]
    spool = Spool(tmp_path / "spool")
    whole = train_model(spec, job, bundle, hand_off=Spool(tmp_path / "whole").hand_off(job.model_id))
    with pytest.raises(Killed):
        train_model(spec, job, bundle, hand_off=spool.hand_off(job.model_id),
                    store=StateStore(tmp_path / "state", job.model_id, on_epoch=kill_at_3))
    store = StateStore(tmp_path / "state", job.model_id)
    assert load_state(store).epoch == 2
    assert sorted(p.name for p in store.path.iterdir()) == ["state-2.safetensors", STATE_JSON]
    resumed = train_model(spec, job, bundle, hand_off=spool.hand_off(job.model_id), store=store)
    assert [(c.epoch, c.train, c.test, c.finite) for c in resumed.checkpoints] == [
        (c.epoch, c.train, c.test, c.finite) for c in whole.checkpoints]
    for epoch in (0, 1, 2, 3):
        assert (spool.path(job.model_id, epoch).read_bytes()
                == Spool(tmp_path / "whole").path(job.model_id, epoch).read_bytes())


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    messages = []
    with FolderLock(tmp_path / "zoo"):
        with pytest.raises(FolderLocked, match=r"another `zoo generate` writes this folder "
                                               rf"\(pid {os.getpid()} on "):
            FolderLock(tmp_path / "zoo").acquire()
    assert not (tmp_path / "zoo").exists()  # the lock made the folder and left it empty
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / LOCK).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": int(dead), "started": "2026-01-01T00:00:00Z"}))
    with FolderLock(tmp_path / "zoo", on_stale=messages.append):
        holder = json.loads((tmp_path / "zoo" / LOCK).read_text())
        assert holder["pid"] == os.getpid()
    assert messages == [f"{tmp_path / 'zoo' / LOCK}: stale lock of a dead process (pid {dead} "
                        f"on {socket.gethostname()}, since 2026-01-01T00:00:00Z); taking it over"]


def test_cli_second_concurrent_generate_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "zoo"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                        "started": "2026-11-25T10:00:00Z"}))
    spec = write_spec(tmp_path)
    assert main(["generate", str(spec), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"zoo: error: {out}: another `zoo generate` writes this folder (pid "
                   f"{os.getpid()} on {socket.gethostname()}, since 2026-11-25T10:00:00Z); "
                   f"wait for it or stop it")
    assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing touched


def test_unlisted_files_of_a_killed_run_are_removed_at_the_next_start(tiny_zoo, tmp_path):
    import shutil

    from zoo.folder.record import read_record

    copy = tmp_path / "copy"
    shutil.copytree(tiny_zoo, copy)
    strays = [copy / "data/models/cell-abc_12345678.parquet", copy / "hdf5/models/m_1.h5",
              copy / "data/cells/x.parquet.partial"]
    for stray in strays:
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"half")
    reader = ZooReader(copy)
    writer = ZooWriter(copy, reader.manifest.spec_hash)
    removed = writer.start(read_record(copy))
    assert sorted(removed) == sorted(strays)
    assert not any(s.exists() for s in strays)
    assert verify(copy) == []


def test_a_worker_whose_data_differs_fails_with_a_clear_error(tmp_path):
    spec = load_spec(write_spec(tmp_path, data={"name": "digits"}))
    bundle = WorkerData(None, bundle_fingerprint := "0" * 64)
    with pytest.raises(DataError, match=r"fingerprint \w{12}, the driver's is 000000000000; "
                                        r"every node must see the same files"):
        bundle.load(spec)
    real = datasets.load("digits")
    assert WorkerData(None, real.fingerprint()).load(spec).fingerprint() == real.fingerprint()
    assert WorkerData(real, bundle_fingerprint).load(spec) is real  # shipped: used as is


def _zoo_values(root: Path) -> dict:
    """(model_id, epoch) -> flat weights and every metric column of a zoo."""
    from loaders.store import read_metadata, read_weights

    reader = ZooReader(root)
    columns = read_metadata(reader)
    store = read_weights(reader, columns, np.arange(len(columns["model_id"])))
    skip = {"weights_file", "train_seconds", "shard", "row", "generalization_gap"}
    values = {}
    for i, key in enumerate(zip(columns["model_id"], columns["epoch"])):
        row = {n: columns[n][i] for n in columns if n not in skip}
        weights = store.arrays[store.keys[i]][store.slots[i]]
        values[key] = (weights.tobytes(), json.dumps(row, default=str, sort_keys=True))
    return values


@pytest.mark.slow
def test_a_worker_killed_inside_a_resnet_model_resumes_to_the_identical_zoo(resnet_zoo,
                                                                             tmp_path):
    import ray

    spec, out, marker = write_spec(tmp_path, **RESNET), tmp_path / "killed", tmp_path / "once"
    command = [sys.executable, "-m", "tests.faults", f"kill-once-saved:{marker}", "generate",
               str(spec), "--out", str(out), "--no-progress", "--inline-bytes", "1",
               "--address", ray.get_runtime_context().gcs_address]
    process = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    assert marker.exists()  # a worker died inside a model, after a state was saved
    assert _zoo_values(out) == _zoo_values(resnet_zoo)
    assert verify(out) == []
    assert not (out / "state").exists() and not list(out.rglob("*.partial"))


def _text_spec(folder: Path):
    corpus = folder / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"{i}.txt").write_text(f"the zoo of models number {i} " * 40)
    return load_spec(write_spec(
        folder, name="text", architecture={"family": "gpt", "args": {"depth": 1, "heads": 1}},
        data={"name": "text-folder", "root": str(corpus), "args": {"context": 8}},
        training={"epochs": 1, "learning_rate": 0.01, "optimizer": "adamw"},
        grid={"load": {"axis": "model_dim", "values": [8]},
              "temperature": {"axis": "batch_size", "values": [64]}},
        metrics={"epochs": ["last"], "hessian": {"enabled": False},
                 "similarity": {"enabled": False}, "curve": {"enabled": False}}))


def test_workers_load_folder_data_from_its_root_and_check_the_fingerprint(tmp_path,
                                                                         ray_runtime):
    from generators.executor import Task, run_tasks

    spec = _text_spec(tmp_path)
    bundle = datasets.load("text-folder", root=spec.data.root, args=spec.data.args)
    jobs = tuple(spec.jobs(bundle.fingerprint()))
    task = Task((jobs,), stacked=False)
    outcomes = []
    run_tasks(spec, [task], WorkerData(None, bundle.fingerprint()), on_outcome=outcomes.append)
    assert outcomes[0].failure is None and len(outcomes[0].result.models) == 2 * 2
    (Path(spec.data.root) / "0.txt").write_text("changed after the driver read it " * 40)
    outcomes = []
    run_tasks(spec, [task], WorkerData(None, bundle.fingerprint()), on_outcome=outcomes.append)
    assert outcomes[0].failure.error.startswith(f"DataError: {spec.data.root}: data set "
                                                f"'text-folder' on this worker has fingerprint ")


@pytest.mark.slow
def test_a_second_concurrent_generate_is_refused_in_one_line(tmp_path, ray_runtime):
    import time

    import ray

    spec, out = write_spec(tmp_path), tmp_path / "zoo"
    command = [sys.executable, "-m", "generators.cli", "generate", str(spec), "--out", str(out),
               "--no-progress", "--address", ray.get_runtime_context().gcs_address]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK).exists():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.02)
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1
        assert f"another `zoo generate` writes this folder (pid {first.pid} on " in second.stderr
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert not (out / LOCK).exists() and verify(out) == []
