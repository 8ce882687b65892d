"""End-to-end generation of a tiny real zoo: layout, values, determinism, HF, CLI."""

import dataclasses
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from generators.cli import main
from generators.generate import generate, load_data
from tests.conftest import write_spec
from zoo.folder.reader import ZooReader
from zoo.objective import Objective
from zoo.specfile import load_spec
from zoo.train import build_model


def test_rows_are_cells_times_seeds_times_kept_epochs(tiny_zoo):
    reader = ZooReader(tiny_zoo)
    models = reader.table("models", columns=["model_id", "cell_id", "epoch", "finite"])
    assert models.num_rows == 4 * 2 * 3
    pairs = set(zip(models.column("model_id").to_pylist(), models.column("epoch").to_pylist()))
    assert len(pairs) == models.num_rows  # no duplicate (model, epoch)
    assert set(models.column("epoch").to_pylist()) == {0, 1, 2}
    assert reader.table("cells").num_rows == 4
    assert all(models.column("finite").to_pylist())
    assert json.loads((tiny_zoo / "zoo.json").read_text())["spec"]["name"] == "tiny"


def test_every_checkpoint_reproduces_its_recorded_test_metrics(tiny_zoo):
    reader = ZooReader(tiny_zoo)
    spec = load_spec(tiny_zoo.parent / "tiny.yaml")
    bundle = load_data(spec)
    objective = Objective(bundle)
    rows = reader.table("models").to_pylist()
    cells = {c.width: c for c in spec.cells()}
    for row in rows:
        layout = reader.layout(row["layout"])
        model = build_model(spec, cells[row["width"]], bundle, seed=0)
        model.load_state_dict(layout.unflatten(np.frombuffer(row["weights"], "<f4")))
        result = objective.evaluate(model, "test")
        assert result["accuracy"] == row["test_accuracy"]
        assert result["loss"] == row["test_loss"]


def test_parquet_and_hdf5_hold_identical_values(tiny_zoo):
    reader = ZooReader(tiny_zoo)
    for shard in reader.manifest.shards_of("models", "hdf5"):
        parquet = next(s for s in reader.manifest.shards_of("models")
                       if s.cell_id == shard.cell_id)
        rows = pq.read_table(reader.path(parquet)).to_pylist()
        with h5py.File(reader.path(shard), "r") as handle:
            layout = reader.layout(handle.attrs["layout"])
            assert [m.decode() for m in handle["model_id"][:]] == [r["model_id"] for r in rows]
            assert list(handle["epoch"][:]) == [r["epoch"] for r in rows]
            for i, row in enumerate(rows):
                state = layout.unflatten(np.frombuffer(row["weights"], "<f4"))
                for name, tensor in state.items():
                    stored = torch.from_numpy(handle["weights"][name][i])
                    assert torch.equal(stored.to(tensor.dtype), tensor), name
            assert np.array_equal(handle["columns"]["test_loss"][:],
                                  [r["test_loss"] for r in rows])


def test_same_spec_twice_gives_identical_weights(tiny_zoo, tmp_path, ray_runtime):
    spec = load_spec(tiny_zoo.parent / "tiny.yaml")
    again = tmp_path / "again"
    generate(spec, again, progress=False, formats=("parquet",))
    key = ["model_id", "epoch"]
    first = ZooReader(tiny_zoo).table("models", columns=[*key, "weights"]).sort_by(
        [(k, "ascending") for k in key])
    second = ZooReader(again).table("models", columns=[*key, "weights"]).sort_by(
        [(k, "ascending") for k in key])
    assert first.equals(second)


def test_rerun_on_a_finished_zoo_trains_nothing(tiny_zoo, ray_runtime):
    spec = load_spec(tiny_zoo.parent / "tiny.yaml")
    before = (tiny_zoo / "manifest.json").read_text()
    result = generate(spec, tiny_zoo, progress=False)
    assert result.committed == 0 and not result.plan.missing
    assert (tiny_zoo / "manifest.json").read_text() == before


def test_hugging_face_load_dataset_reads_the_folder_offline(tiny_zoo, tmp_path):
    code = ("import datasets, sys; d = datasets.load_dataset(sys.argv[1], cache_dir=sys.argv[2]);"
            "c = datasets.load_dataset(sys.argv[1], 'cells', cache_dir=sys.argv[2]);"
            "print(sum(p.num_rows for p in d.values()), sum(p.num_rows for p in c.values()),"
            "len(d['train'][0]['weights']) // 4)")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_zoo), str(tmp_path / "cache")],
                         capture_output=True, text=True, env={"HF_DATASETS_OFFLINE": "1",
                                                               "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    rows, cells, size = out.stdout.split()
    assert (int(rows), int(cells)) == (24, 4)
    sizes = ZooReader(tiny_zoo).table("models", ["num_params"]).column(0).to_pylist()
    assert int(size) in sizes


def test_cli_bad_spec_is_one_line_exit_2_and_leaves_no_folder(tmp_path, capsys):
    path = write_spec(tmp_path, training={"epochs": -3})
    out = tmp_path / "never"
    code = main(["generate", str(path), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip().count("\n") == 0
    assert "training.epochs: -3 is not allowed" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_cli_dry_run_info_and_specs(tiny_zoo, tmp_path, capsys):
    path = tiny_zoo.parent / "tiny.yaml"
    assert main(["generate", str(path), "--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    assert "4 cells (2 width × 2 batch_size) × 2 seeds = 8 models, 24 model rows" in \
        capsys.readouterr().err
    assert not (tmp_path / "dry").exists()
    assert main(["info", str(tiny_zoo)]) == 0
    info = capsys.readouterr().out
    assert "4 cells, 24 model rows" in info and "phases:" in info
    assert main(["specs"]) == 0
    assert "demo" in capsys.readouterr().out


def test_a_folder_of_another_spec_is_refused(tiny_zoo, tmp_path, capsys):
    path = write_spec(tmp_path, training={"epochs": 2, "learning_rate": 0.1})
    assert main(["generate", str(path), "--out", str(tiny_zoo)]) == 2
    assert "holds a zoo of another spec" in capsys.readouterr().err


@pytest.mark.parametrize("name, models, rows", [
    ("resnet18-cifar10", 192, 192 * 151), ("resnet50-tinyimagenet", 192, 192 * 101),
    ("vit-cifar100", 147, 147 * 41), ("gpt2-text", 264, 264 * 11),
    ("pinn-convection-700", 700, 700 * 5)])
def test_published_zoo_specs_dry_run_to_the_published_counts(name, models, rows, tmp_path):
    import io

    stream = io.StringIO()
    result = generate(load_spec(name), tmp_path / name, dry_run=True, stream=stream)
    assert result.plan.num_models == models
    assert f"= {models} models, {rows} model rows" in stream.getvalue()
    assert not (tmp_path / name).exists()


def test_cells_differing_in_learning_rate_train_as_one_population(tmp_path, ray_runtime):
    from generators.plan import make_plan, plan_tasks
    from zoo.cell import run_cell

    spec = load_spec(write_spec(tmp_path, grid={
        "load": {"axis": "width", "values": [4, 8]},
        "temperature": {"axis": "learning_rate", "values": [0.02, 0.05, 0.1]}},
        training={"epochs": 1, "batch_size": 128}))
    bundle = load_data(spec)
    plan = make_plan(spec, bundle.fingerprint(), tmp_path / "lr")
    tasks = plan_tasks(plan, bundle, workers=2)
    assert [len(t.cells) for t in tasks] == [3, 3] and all(t.stacked for t in tasks)
    assert sorted(len(t.cells) for t in plan_tasks(plan, bundle, workers=4)) == [1, 1, 2, 2]
    generate(spec, tmp_path / "lr", progress=False, formats=("parquet",))
    rows = ZooReader(tmp_path / "lr").table("models").to_pylist()
    assert {r["trained_by"] for r in rows} == {"stacked"}
    # a cell trained on its own (as after a resume) comes out bit for bit the same
    jobs = tasks[0].cells[1]
    alone = run_cell(spec, jobs, bundle, stacked=True)
    stored = {(r["model_id"], r["epoch"]): r["weights"] for r in rows}
    for row in alone.models:
        assert np.array_equal(np.frombuffer(stored[row["model_id"], row["epoch"]], "<f4"),
                              row["weights"])


def test_stacking_is_decided_at_plan_time_and_the_manifest_records_it(tiny_zoo, tmp_path):
    from generators.plan import make_plan, plan_tasks
    from zoo.train import choose_stacking

    reader = ZooReader(tiny_zoo)
    trained_by = {r["cell_id"]: r["trained_by"] == "stacked"
                  for r in reader.table("models", columns=["cell_id", "trained_by"]).to_pylist()}
    assert reader.manifest.stacked == trained_by and len(trained_by) == 4
    spec = load_spec(tiny_zoo.parent / "tiny.yaml")
    bundle = load_data(spec)
    plan = make_plan(spec, bundle.fingerprint(), tmp_path / "fresh")
    for device in ("cpu", "cuda"):  # the plan decides for the device the tasks ask for
        for task in plan_tasks(plan, bundle, workers=2, device=device):
            jobs = [job for cell in task.cells for job in cell]
            assert task.stacked is choose_stacking(spec, jobs, bundle, device)
    # a held cell keeps the way the manifest records, whatever the cost model says now
    grown = tmp_path / "grown"
    shutil.copytree(tiny_zoo, grown)
    manifest = json.loads((grown / "manifest.json").read_text())
    victim = sorted(manifest["stacked"])[0]
    manifest["stacked"][victim] = not manifest["stacked"][victim]
    (grown / "manifest.json").write_text(json.dumps(manifest))
    more = dataclasses.replace(spec, seeds=(0, 1, 2))
    tasks = plan_tasks(make_plan(more, bundle.fingerprint(), grown), bundle, workers=2)
    held = [t for t in tasks if t.cells[0][0].cell_id == victim]
    assert len(held) == 1 and held[0].stacked is manifest["stacked"][victim]


def test_zoo_json_records_the_precision(tiny_zoo):
    from zoo.precision import precision_record

    body = json.loads((tiny_zoo / "zoo.json").read_text())
    assert body["precision"] == precision_record("fp32")
    assert body["precision"]["cudnn_allow_tf32"] is torch.backends.cudnn.allow_tf32


@pytest.mark.skipif(torch.cuda.is_available(), reason="sizes tasks when a GPU is present")
def test_gpus_per_task_auto_without_a_gpu_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "zoo"
    code = main(["generate", str(write_spec(tmp_path)), "--out", str(out),
                 "--gpus-per-task", "auto"])
    assert code == 2 and not out.exists()
    assert "--gpus-per-task auto: torch sees no CUDA device" in capsys.readouterr().err


def _weights(root) -> dict:
    table = ZooReader(root).table("models", columns=["model_id", "epoch", "weights", "trained_by"])
    return {(r["model_id"], r["epoch"]): (r["weights"], r["trained_by"]) for r in table.to_pylist()}


def test_one_model_per_id_whatever_the_seed_count_or_growth(tiny_zoo, tmp_path, ray_runtime):
    from zoo.train import predicted_speedup
    from zoo.train.cost import MIN_SPEEDUP

    spec = load_spec(tiny_zoo.parent / "tiny.yaml")
    more = dataclasses.replace(spec, seeds=(0, 1, 2))
    bundle = load_data(spec)
    edge = [job for job in more.jobs(bundle.fingerprint())
            if (job.cell.width, job.cell.batch_size) == (8, 512)]
    # the cost model applied to a cell's own seed count would train this cell one by one with
    # two seeds and stacked with three
    assert predicted_speedup(more, edge[:2], bundle) < MIN_SPEEDUP <= predicted_speedup(
        more, edge, bundle)
    grown = tmp_path / "grown"
    shutil.copytree(tiny_zoo, grown)
    generate(more, grown, progress=False, formats=("parquet",))
    generate(more, tmp_path / "fresh", progress=False, formats=("parquet",))
    before = _weights(tiny_zoo)
    for folder in (grown, tmp_path / "fresh"):
        after = _weights(folder)
        assert len(after) == len(before) * 3 // 2
        assert all(after[key] == value for key, value in before.items())
