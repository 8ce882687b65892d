"""Ray Tune layout: export and import round-trip, published-style trials, refused pickles."""

import json
import math
import os

import numpy as np
import pytest
import torch

from analysis.interop import export_ray_tune, import_ray_tune, result_lines
from analysis.trial_folders import NUMBERS, read_trial_checkpoint, result_text
from analysis.verify import verify
from generators.cli import main
from loaders import load_model
from zoo import architectures
from zoo.datasets.builtin import DIGITS_INFO, MNIST1D_INFO
from zoo.errors import ZooError
from zoo.folder.reader import ZooReader
from zoo.folder.schema import CELL_JOINED


def rows_by_key(root, table, key):
    return {tuple(r[k] for k in key): r for r in ZooReader(root).table(table).to_pylist()}


def assert_same(a, b):
    if isinstance(a, list):
        np.testing.assert_array_equal(np.asarray(a, float), np.asarray(b, float))
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def test_export_writes_the_published_layout(tiny_zoo, tmp_path):
    folders = export_ray_tune(tiny_zoo, tmp_path / "trials")
    assert len(folders) == 8
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == ["width_4", "width_8"]
    for group in (tmp_path / "trials").iterdir():  # one shape per folder, as their stack needs
        states = [torch.load(trial / "checkpoint_000002" / "checkpoints", weights_only=True)
                  for trial in group.iterdir()]
        shapes = {tuple(v.shape) for state in states for v in state.values()}
        assert len(shapes) == 4
    params = json.loads((folders[0] / "params.json").read_text())
    assert params["model::type"] == "mlp" and params["model::width"] == 4
    assert params["training::batchsize"] == 128 and params["seed"] == 0
    assert params["optim::lr"] == 0.05 and params["optim::scheduler"] == "OneCycleLR"
    lines = [json.loads(line) for line in (folders[0] / "result.json").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2]
    recorded = rows_by_key(tiny_zoo, "models", ("model_id", "epoch"))
    for epoch, line in enumerate(lines):
        row = recorded[params["phase_zoo::model_id"], epoch]
        assert line["test_acc"] == row["test_accuracy"] and line["train_loss"] == row["train_loss"]
        path = folders[0] / f"checkpoint_{epoch:06d}" / "checkpoints"
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert list(state) == ["module_list.1.weight", "module_list.1.bias",
                               "module_list.3.weight", "module_list.3.bias"]
    assert lines[2]["log_hessian_trace"] is not None and lines[1]["log_hessian_trace"] is None
    assert lines[2]["log_hessian_trace"] == pytest.approx(
        math.log(recorded[params["phase_zoo::model_id"], 2]["hessian_trace_train"]))


def read_properties(paths, epochs, result_keys, config_keys, idx_offset):
    """ModelZooDataset's and SANE's read_properties (dataset_base.py / dataset_epochs.py):
    line `epoch - idx_offset` of result.json, config keys from its "config", and the first
    model's `training_iteration` asserted equal to the epoch."""
    properties = {key: [] for key in (*result_keys, *config_keys)}
    for iidx, path in enumerate(paths):
        temporary = {key: [] for key in properties}
        results = [json.loads(line) for line in (path / "result.json").open()]
        for epoch in epochs:
            line = results[epoch - idx_offset]
            for key in result_keys:
                temporary[key].append(line[key])
            for key in config_keys:
                temporary[key].append(line["config"][key])
            if iidx == 0:
                assert int(epoch) == int(line["training_iteration"])
        for key in properties:
            properties[key].append(temporary[key])
    return properties


def their_checkpoint(path, epoch):
    """Their checkpoint path rule: checkpoint_{e}, else checkpoint_{e:06d}."""
    plain = path / f"checkpoint_{epoch}" / "checkpoints"
    chosen = plain if plain.exists() else path / f"checkpoint_{epoch:06d}" / "checkpoints"
    return torch.load(chosen, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("epochs", [[0, 1, 2], [2], [1, 2]])
def test_the_anchors_reading_rules_read_our_export(tiny_zoo, tmp_path, epochs):
    paths = export_ray_tune(tiny_zoo, tmp_path / "trials")
    keys, config = ["test_acc", "train_loss"], ["model::width", "training::batchsize", "seed"]
    try:  # their order: offset 1, then 0 when the training_iteration assertion fails
        properties = read_properties(paths, epochs, keys, config, idx_offset=1)
    except AssertionError:
        properties = read_properties(paths, epochs, keys, config, idx_offset=0)
    recorded = rows_by_key(tiny_zoo, "models", ("model_id", "epoch"))
    for number, path in enumerate(paths):
        model = json.loads((path / "params.json").read_text())["phase_zoo::model_id"]
        rows = [recorded[model, epoch] for epoch in epochs]
        assert properties["test_acc"][number] == [r["test_accuracy"] for r in rows]
        assert properties["train_loss"][number] == [r["train_loss"] for r in rows]
        assert properties["model::width"][number] == [r["width"] for r in rows]
        assert properties["training::batchsize"][number] == [r["batch_size"] for r in rows]
        assert properties["seed"][number] == [r["seed"] for r in rows]
        for epoch in epochs:
            layout = ZooReader(tiny_zoo).layout(recorded[model, epoch]["layout"])
            flat = np.frombuffer(recorded[model, epoch]["weights"], "<f4")
            for name, value in their_checkpoint(path, epoch).items():
                assert torch.equal(value, layout.unflatten(flat)[name.removeprefix(
                    "module_list.")])


def test_export_then_import_gives_back_every_weight_and_metric(tiny_zoo, tmp_path):
    trials, imported = tmp_path / "trials", tmp_path / "imported"
    assert main(["export-ray-tune", str(tiny_zoo), "--out", str(trials)]) == 0
    assert main(["import-ray-tune", str(trials), "--out", str(imported)]) == 0
    assert verify(imported) == []
    before = rows_by_key(tiny_zoo, "models", ("model_id", "epoch"))
    after = rows_by_key(imported, "models", ("model_id", "epoch"))
    assert set(before) == set(after)  # ids are recomputed from the same recipe and data
    for key, row in before.items():
        for column, value in row.items():
            if column in CELL_JOINED[1:]:  # recomputed from per-model means on import
                assert after[key][column] == pytest.approx(value, nan_ok=True)
            elif column not in ("zoo", "spec_hash"):
                assert_same(value, after[key][column])
    cells = rows_by_key(imported, "cells", ("cell_id",))
    for key, row in rows_by_key(tiny_zoo, "cells", ("cell_id",)).items():
        assert cells[key]["phase"] == row["phase"]
        for name in ("cka_mean", "mc_train_error_mean", "test_accuracy_mean",
                     "hessian_trace_train_mean"):
            assert cells[key][name] == pytest.approx(row[name])
    assert (imported / "README.md").exists()
    assert json.loads((imported / "zoo.json").read_text())["imported_from"]["trials"] == 8


def write_trial(folder, seed, state, width=2, prefix="module."):
    """A trial folder as the published ResNet zoos write it (two epochs, metrics at epoch 1)."""
    folder.mkdir(parents=True)
    params = {"model::type": "Resnet18_width", "model::width": width, "model::nlin": "relu",
              "optim::optimizer": "sgd", "optim::lr": 0.1, "optim::wd": 5e-4,
              "optim::momentum": 0.9, "optim::scheduler": "OneCycleLR",
              "training::batchsize": 64, "training::epochs_train": 1, "seed": seed}
    (folder / "params.json").write_text(json.dumps(params))
    lines = [{"train_loss": 2.3, "train_acc": 0.1, "test_loss": 2.3, "test_acc": 0.1},
             {"train_loss": 0.05, "train_acc": 0.99, "test_loss": 0.3, "test_acc": 0.9,
              "log_hessian_trace_train": 1.0, "representation_similarity": 0.95,
              "curve_mc_train_error": 0.5}]
    (folder / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for epoch in (0, 1):
        path = folder / f"checkpoint_{epoch:06d}" / "checkpoints"
        path.parent.mkdir()
        torch.save({prefix + k: v for k, v in state.items()}, path)


def test_unmeasured_epochs_give_numbers_so_their_ggap_and_offset_retry_work():
    measured = {e: {"train_acc": 0.5 + e / 10, "test_acc": 0.4 + e / 10, "train_loss": 1.0,
                    "test_loss": 2.0, "log_hessian_trace": 1.0} for e in (0, 2)}
    lines = [json.loads(result_text(line)) for line in result_lines({"seed": 0}, measured, 2)]
    assert all(isinstance(line[key], float) for line in lines for key in NUMBERS)
    assert math.isnan(lines[1]["test_acc"]) and lines[1]["log_hessian_trace"] is None

    def properties(offset):  # ModelZooDataset's read_properties for the epoch-2 checkpoint
        line = lines[2 - offset]
        gap = line["train_acc"] - line["test_acc"]  # before its training_iteration check
        assert line["training_iteration"] == 2
        return gap

    with pytest.raises(AssertionError):
        properties(1)
    assert properties(0) == pytest.approx(0.1)


def test_published_module_list_keys_import_as_our_names(tmp_path):
    state = {f"module_list.{k}": v for k, v in architectures.build(
        "mlp", width=4, info=MNIST1D_INFO, args={"depth": 1}).state_dict().items()}
    path = tmp_path / "checkpoints"
    torch.save(state, path)
    assert list(read_trial_checkpoint(path)) == ["1.weight", "1.bias", "3.weight", "3.bias"]


def resnet_state(seed, width=2):
    torch.manual_seed(seed)
    model = architectures.build("resnet18", width=width, info=DIGITS_INFO)
    return model.state_dict()


def test_published_trials_with_module_prefixes_import(tmp_path):
    states = [resnet_state(seed) for seed in (0, 1)]
    for seed, state in enumerate(states):
        write_trial(tmp_path / "src" / f"NN_tune_trainable_{seed:05d}", seed, state)
    report = import_ray_tune(tmp_path / "src", tmp_path / "zoo", data="digits")
    assert (report.trials, report.cells, report.missing) == (2, 1, [])
    assert verify(report.root) == []
    cell = ZooReader(report.root).table("cells").to_pylist()[0]
    assert cell["phase"] == "IV-B"  # low loss, mc within ±2 points, CKA 0.95 >= 0.9
    assert cell["hessian_trace_train_mean"] == pytest.approx(math.e)
    models = rows_by_key(report.root, "models", ("seed", "epoch"))
    assert models[1, 1]["test_accuracy"] == 0.9
    assert models[1, 1]["test_error"] == pytest.approx(0.1)
    model = load_model(report.root, models[1, 1]["model_id"], 1)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, states[1][name])


def test_mismatched_state_dicts_are_refused_naming_the_file(tmp_path):
    write_trial(tmp_path / "src" / "trial", 0, resnet_state(0, width=4), width=2)
    with pytest.raises(ZooError, match=r"checkpoint_000000/checkpoints: does not match "
                                       r"resnet18 width 2"):
        import_ray_tune(tmp_path / "src", tmp_path / "zoo", data="digits")


class Payload:
    """Unpickling this runs os.mkdir: what a malicious checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_pickled_payload_is_refused_by_weights_only(tmp_path):
    marker = tmp_path / "payload-ran"
    write_trial(tmp_path / "src" / "trial", 0, resnet_state(0))
    path = tmp_path / "src" / "trial" / "checkpoint_000001" / "checkpoints"
    torch.save({"conv1.weight": Payload(marker)}, path)
    with pytest.raises(ZooError, match=f"{path}: refused to load.*GLOBAL posix.mkdir"):
        import_ray_tune(tmp_path / "src", tmp_path / "zoo", data="digits")
    assert not marker.exists()
    with pytest.raises(ZooError, match="refused to load"):
        read_trial_checkpoint(path)


def test_import_refuses_a_folder_without_trials_and_a_full_out(tmp_path, tiny_zoo):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match="no trial folders"):
        import_ray_tune(tmp_path / "empty", tmp_path / "zoo")
    with pytest.raises(ZooError, match="exists and is not empty"):
        export_ray_tune(tiny_zoo, tiny_zoo)
