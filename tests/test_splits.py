"""Splits: a hash of the id, never silently empty; counts per split; the dataset says so."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loaders import Augment, ZooDataset
from zoo.folder.splits import SPLITS, assign_splits, owners, split_of, unit

FRACTIONS = (0.7, 0.15, 0.15)


def ids_in_train(count):
    """The first `count` ids "cell-i" whose hash alone puts them all in train."""
    found = [f"cell-{i}" for i in range(1000) if unit(f"cell-{i}") < 0.7]
    return found[:count]


def test_a_split_that_the_hash_leaves_empty_gets_the_nearest_identifier():
    identifiers = ids_in_train(4)
    assert {split_of(i, FRACTIONS) for i in identifiers} == {"train"}
    owner = owners(identifiers, FRACTIONS)
    assert sorted(owner.values()) == ["test", "train", "train", "val"]
    by_u = sorted(identifiers, key=unit)
    assert owner[by_u[-1]] == "val" and owner[by_u[-2]] == "test"  # nearest to 0.7, then
    assert owners(list(reversed(identifiers)), FRACTIONS) == owner  # order does not matter
    rows = np.array([identifiers[0], identifiers[3], identifiers[0]], dtype=object)
    assert assign_splits(rows, FRACTIONS).tolist() == [owner[identifiers[0]],
                                                       owner[identifiers[3]],
                                                       owner[identifiers[0]]]


def test_enough_identifiers_keep_the_hash_rule_and_zero_fractions_stay_empty():
    identifiers = [f"model-{i}" for i in range(200)]
    owner = owners(identifiers, FRACTIONS)
    assert all(owner[i] == split_of(i, FRACTIONS) for i in identifiers)
    assert set(owners(ids_in_train(3), (1.0, 0.0, 0.0)).values()) == {"train"}
    assert sorted(owners(ids_in_train(2), FRACTIONS).values()) == ["train", "val"]


def test_every_split_of_the_tiny_zoo_holds_a_cell_and_splits_counts_them(tiny_zoo):
    ds = ZooDataset(tiny_zoo, split="test", split_by="cell", epochs="all")
    summary = ds.splits()
    assert [summary[s]["cells"] for s in SPLITS] == [2, 1, 1]
    assert sum(summary[s]["rows"] for s in SPLITS) == 24
    assert summary["test"]["rows"] == len(ds) == 6 and summary["test"]["models"] == 2


def test_an_empty_split_is_an_error_naming_the_counts(tiny_zoo):
    val = ZooDataset(tiny_zoo, split="val", split_by="cell").columns["cell_id"][0]
    others = [c for c in ZooDataset(tiny_zoo, split="all").columns["cell_id"] if c != val]
    with pytest.raises(ValueError, match=r"split 'val' is empty after epochs=\[0\] and where; "
                                         r"rows per split: train 4, val 0, test 2"):
        ZooDataset(tiny_zoo, split="val", epochs=[0], split_by="cell", where={"cell_id": others})


def test_repr_states_rows_models_layouts_split_and_representation(tiny_zoo):
    ds = ZooDataset(tiny_zoo, representation="tokens")
    text = repr(ds)
    summary = ds.splits()
    assert text.startswith(f"ZooDataset({str(tiny_zoo)!r}, split='train' by cell, "
                           f"epochs='last', representation='tokens'): {len(ds)} rows of "
                           f"{summary['train']['models']} models (zoo: 24 rows, 8 models; ")
    assert f"train {summary['train']['rows']}, val {summary['val']['rows']}" in text
    for key in ds.layouts:
        assert f"{key}: {ds.row_layouts.count(key)}" in text


def test_arrays_give_x_and_y_per_layout_in_dataset_order(tiny_zoo):
    ds = ZooDataset(tiny_zoo, split="all", epochs="all", targets=["test_accuracy", "epoch"])
    for key in ds.layouts:
        x, y = ds.arrays(key)
        rows = [i for i in range(len(ds)) if ds[i]["layout"] == key]
        assert x.dtype == np.float32 and x.shape == (len(rows), ds.layouts[key].size)
        assert np.array_equal(x, np.stack([ds[i]["weights"].numpy() for i in rows]))
        assert np.array_equal(y, np.stack([ds[i]["targets"].numpy() for i in rows]))
        tx, ty = ds.arrays(key, as_torch=True)
        assert torch.equal(tx, torch.from_numpy(x)) and torch.equal(ty, torch.from_numpy(y))
    stats = ZooDataset(tiny_zoo, split="all", representation="stats", where={"width": 8})
    x, _ = stats.arrays()
    assert np.array_equal(x, np.stack([stats[i]["weights"].numpy() for i in range(len(stats))]))
    with pytest.raises(ValueError, match="arrays: layout None is not in this dataset"):
        ds.arrays()
    with pytest.raises(ValueError, match="arrays: representation 'tokens' has no matrix form"):
        ZooDataset(tiny_zoo, split="all", representation="tokens").arrays()


def test_set_epoch_reaches_persistent_dataloader_workers(tiny_zoo):
    ds = ZooDataset(tiny_zoo, epochs="all", where={"width": 8},
                    augment=Augment(permute=True, seed=5))
    loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)
    epochs = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        epochs.append(torch.cat([b["weights"] for b in loader]))
    assert not torch.equal(epochs[0], epochs[1])
    for epoch in range(2):  # the same draws as in this process, epoch by epoch
        ds.set_epoch(epoch)
        assert torch.equal(epochs[epoch], torch.stack([ds[i]["weights"]
                                                       for i in range(len(ds))]))


def test_validation_is_val_and_cells_are_the_default_unit_as_on_the_hub(tiny_zoo):
    val = ZooDataset(tiny_zoo, split="val", epochs="all")
    validation = ZooDataset(tiny_zoo, split="validation", epochs="all")
    by_cell = ZooDataset(tiny_zoo, split="val", epochs="all", split_by="cell")
    assert validation.split == "val" and len(validation) == len(val) == len(by_cell) == 6
    assert list(validation.columns["model_id"]) == list(by_cell.columns["model_id"])
    assert val.splits() == by_cell.splits() and val.splits()["val"]["cells"] == 1
    with pytest.raises(ValueError, match="split: 'valid' is not allowed; expected one of "
                                         "'train', 'val', 'test', 'validation', 'all'"):
        ZooDataset(tiny_zoo, split="valid")


def test_arrays_name_their_rows_and_features(tiny_zoo):
    ds = ZooDataset(tiny_zoo, split="all", epochs="all", where={"width": 4},
                    targets=["test_accuracy"])
    result = ds.arrays()
    x, y = result
    assert x is result.x and y is result.y and len(result) == 2
    assert result.index.tolist() == list(range(len(ds)))
    assert list(result.model_ids) == [ds[i]["model_id"] for i in range(len(ds))]
    assert list(result.epochs) == [ds[i]["epoch"] for i in range(len(ds))]
    layout = ds.layouts[ds[0]["layout"]]
    assert result.features[:2] == [f"{layout.entries[0].name}[0]",
                                   f"{layout.entries[0].name}[1]"]
    assert len(result.features) == x.shape[1] == layout.size
    stats = ZooDataset(tiny_zoo, split="all", representation="stats", where={"width": 4})
    named = stats.arrays()
    assert named.features[:2] == [f"{layout.entries[0].name}.mean",
                                  f"{layout.entries[0].name}.var"]
    assert len(named.features) == named.x.shape[1]
