"""ZooDataset: splits, filters, targets, normalisation, models back, integrity of the shards."""

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loaders import ZooDataset, groups, load_model, pairs
from zoo import datasets
from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.reader import ZooReader
from zoo.objective import Objective
from zoo.phases import PHASES


def ids(dataset):
    return {(dataset[i]["model_id"], dataset[i]["epoch"]) for i in range(len(dataset))}


def models_table(root):
    return ZooReader(root).table("models", columns=["model_id", "cell_id", "epoch", "seed",
                                                    "width", "batch_size"]).to_pylist()


def test_model_splits_are_stable_disjoint_and_cover_every_row(tiny_zoo):
    splits = {s: ids(ZooDataset(tiny_zoo, split=s, split_by="model", epochs="all"))
              for s in ("train", "val", "test")}
    again = {s: ids(ZooDataset(tiny_zoo, split=s, split_by="model", epochs="all"))
             for s in splits}
    assert splits == again
    rows = {(r["model_id"], r["epoch"]) for r in models_table(tiny_zoo)}
    assert set.union(*splits.values()) == rows
    assert sum(len(s) for s in splits.values()) == len(rows)
    owners = {}
    for split, members in splits.items():
        for model, _ in members:
            assert owners.setdefault(model, split) == split  # no model spans two splits
    for model, split in owners.items():  # the documented rule, recomputed here
        u = int.from_bytes(hashlib.sha256(model.encode()).digest()[:8], "big") / 2**64
        assert split == ("train" if u < 0.7 else "val" if u < 0.85 else "test")


def test_cell_split_keeps_a_cells_seeds_together(tiny_zoo):
    owner = {}
    for split in ("train", "val", "test"):
        ds = ZooDataset(tiny_zoo, split=split, split_by="cell", epochs="all")
        for i in range(len(ds)):
            assert owner.setdefault(ds[i]["cell_id"], split) == split
    assert len(owner) == 4


def test_epochs_select_last_all_or_listed(tiny_zoo):
    last = ZooDataset(tiny_zoo, split="all")
    assert len(last) == 8 and {last[i]["epoch"] for i in range(8)} == {2}
    assert len(ZooDataset(tiny_zoo, split="all", epochs="all")) == 24
    listed = ZooDataset(tiny_zoo, split="all", epochs=[0, 1])
    assert sorted({listed[i]["epoch"] for i in range(len(listed))}) == [0, 1]
    with pytest.raises(ValueError, match="epochs: 'first' is not allowed"):
        ZooDataset(tiny_zoo, epochs="first")


def test_where_takes_column_values_or_a_callable(tiny_zoo):
    narrow = ZooDataset(tiny_zoo, split="all", where={"width": 4, "batch_size": [128, 512]})
    assert len(narrow) == 4 and all(narrow.metadata(i)["width"] == 4 for i in range(4))
    called = ZooDataset(tiny_zoo, split="all", epochs="all",
                        where=lambda row: row["batch_size"] == 128 and row["epoch"] > 0)
    assert len(called) == 8
    assert all(called.metadata(i)["batch_size"] == 128 for i in range(8))
    with pytest.raises(ValueError, match="where: unknown column 'depth'"):
        ZooDataset(tiny_zoo, where={"depth": 1})


def test_targets_hold_named_columns_gap_and_phase_index(tiny_zoo):
    ds = ZooDataset(tiny_zoo, split="all", targets=["test_accuracy", "generalization_gap",
                                                     "phase", "hessian_trace_train"])
    for i in range(len(ds)):
        row, targets = ds.metadata(i), ds[i]["targets"]
        assert targets.dtype == torch.float32 and targets.shape == (4,)
        assert targets[0] == np.float32(row["test_accuracy"])
        assert targets[1] == np.float32(row["test_loss"] - row["train_loss"])
        phase = PHASES.index(row["phase"]) if row["phase"] in PHASES else math.nan
        assert targets[2].item() == phase or (math.isnan(phase) and targets[2].isnan())
        hessian = row["hessian_trace_train"]
        assert targets[3].item() == pytest.approx(hessian, nan_ok=True)
    with pytest.raises(ValueError, match="targets: 'zoo' is not a numeric column"):
        ZooDataset(tiny_zoo, targets=["zoo"])


def test_layer_normalisation_takes_train_statistics_for_every_split(tiny_zoo):
    train = ZooDataset(tiny_zoo, epochs="all", normalize="layer", where={"width": 8},
                       split_by="model")
    val = ZooDataset(tiny_zoo, split="val", epochs="all", normalize="layer", where={"width": 8},
                     split_by="model")
    key = train[0]["layout"]
    assert len(val) > 0
    for ours, theirs in zip(train.statistics[key], val.statistics[key]):
        assert torch.equal(ours, theirs)
    layout = train.layouts[key]
    stacked = torch.stack([train[i]["weights"] for i in range(len(train))])
    for entry in layout.entries:
        block = stacked[:, entry.offset:entry.offset + entry.size].double()
        assert abs(float(block.mean())) < 1e-5 and abs(float(block.std(unbiased=False)) - 1) < 1e-5
    raw = ZooDataset(tiny_zoo, split="val", epochs="all", where={"width": 8}, split_by="model")
    for name, value in val.decode(val[0]).items():
        torch.testing.assert_close(value, raw.decode(raw[0])[name], rtol=1e-5, atol=1e-6)


def test_load_model_reproduces_the_recorded_test_accuracy(tiny_zoo):
    objective = Objective(datasets.load("mnist1d"))
    ds = ZooDataset(tiny_zoo, split="all", epochs="all")
    for i in range(len(ds)):
        row = ds.metadata(i)
        model = ds.load_model(i)
        assert not model.training
        assert objective.evaluate(model, "test")["accuracy"] == row["test_accuracy"]
    same = load_model(tiny_zoo, row["model_id"], row["epoch"])
    for name, value in model.state_dict().items():
        assert torch.equal(same.state_dict()[name], value)
    with pytest.raises(KeyError, match=r"at epoch 9; stored epochs: \[0, 1, 2\]"):
        load_model(tiny_zoo, row["model_id"], 9)


def test_groups_and_pairs_list_each_cells_seeds(tiny_zoo):
    rows = models_table(tiny_zoo)
    seeds = {r["model_id"]: r["seed"] for r in rows}
    cells = groups(tiny_zoo)
    assert len(cells) == 4
    for cell, models in cells.items():
        assert [seeds[m] for m in models] == [0, 1]
        assert {r["cell_id"] for r in rows if r["model_id"] in models} == {cell}
    assert pairs(tiny_zoo) == {cell: [tuple(models)] for cell, models in cells.items()}


def test_dataloader_workers_give_the_same_batches(tiny_zoo):
    ds = ZooDataset(tiny_zoo, split="all", epochs="all", where={"width": 8},
                    representation="state_dict", targets=["test_loss"])
    serial = list(DataLoader(ds, batch_size=5))
    parallel = list(DataLoader(ds, batch_size=5, num_workers=2))
    assert len(serial) == len(parallel) == 3
    for one, two in zip(serial, parallel):
        assert one["model_id"] == two["model_id"]
        assert all(torch.equal(one["weights"][n], two["weights"][n]) for n in one["weights"])
        assert torch.equal(one["targets"], two["targets"])


@pytest.fixture
def zoo_copy(tiny_zoo, tmp_path):
    return shutil.copytree(tiny_zoo, tmp_path / "copy")


def test_a_tampered_shard_raises_an_integrity_error_naming_it(zoo_copy):
    shard = ZooReader(zoo_copy).manifest.shards_of("models")[0]
    path = zoo_copy / shard.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{path.name}: .*does not match"):
        ZooDataset(zoo_copy)
    with pytest.raises(IntegrityError, match=path.name):
        load_model(zoo_copy, "any", 0)


def test_a_manifest_path_that_leaves_the_folder_is_refused(zoo_copy):
    manifest = json.loads((zoo_copy / "manifest.json").read_text())
    manifest["shards"][0]["path"] = "../outside.parquet"
    (zoo_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ZooFolderError, match="'../outside.parquet' leaves the zoo folder"):
        ZooDataset(zoo_copy)


@pytest.mark.parametrize("option,value,message", [
    ("split", "valid", "split: 'valid' is not allowed"),
    ("split_by", "seed", "split_by: 'seed' is not allowed"),
    ("normalize", "global", "normalize: 'global' is not allowed"),
    ("fractions", (0.5, 0.5, 0.5), r"fractions: \(0.5, 0.5, 0.5\) is not allowed"),
    ("token_size", -1, "token_size: -1 is not allowed"),
    ("targets", "test_loss", "targets: 'test_loss' is not allowed")])
def test_options_are_validated(tiny_zoo, option, value, message):
    with pytest.raises(ValueError, match=message):
        ZooDataset(tiny_zoo, **{option: value})
