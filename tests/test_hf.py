"""Hugging Face datasets reads the zoo folder: ZooDataset's splits, every format, the card."""

import numpy as np
import pytest
import torch

from loaders import ZooDataset
from zoo.folder.reader import ZooReader

HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}


@pytest.fixture(scope="module")
def hf_models(tiny_zoo, tmp_path_factory):
    import datasets

    cache = tmp_path_factory.mktemp("hf-cache")
    return datasets.load_dataset(str(tiny_zoo), cache_dir=str(cache))


def weights(row) -> torch.Tensor:
    """A row's weights as the card says to decode them."""
    return torch.frombuffer(bytearray(row["weights"]), dtype=torch.float32)


@pytest.mark.parametrize("form", ["torch", "numpy", None])
def test_weights_bytes_decode_to_a_vector_of_the_row_size(hf_models, form):
    row = hf_models["train"].with_format(form)[0]
    assert isinstance(row["weights"], bytes)
    assert np.frombuffer(row["weights"], "<f4").shape == (int(row["num_params"]),)
    assert weights(row).shape == (int(row["num_params"]),)


def test_hf_splits_are_zoo_dataset_cell_splits_with_the_same_weights(hf_models, tiny_zoo):
    assert sorted(hf_models) == ["test", "train", "validation"]
    assert sum(len(part) for part in hf_models.values()) == 24
    for ours_name, theirs_name in HF_SPLITS.items():
        ours = ZooDataset(tiny_zoo, split=ours_name, split_by="cell", epochs="all")
        index = {(ours[i]["model_id"], ours[i]["epoch"]): i for i in range(len(ours))}
        theirs = hf_models[theirs_name]
        assert len(theirs) == len(ours) > 0
        for row in theirs:
            item = ours[index[row["model_id"], int(row["epoch"])]]
            assert item["layout"] == row["layout"]
            assert torch.equal(item["weights"], weights(row))


@pytest.mark.parametrize("form", ["numpy", "torch", "pandas", "arrow", None])
def test_every_format_loads_the_sparse_list_column(hf_models, form):
    rows = hf_models["train"].with_format(form)[:]
    alphas = list(rows["heavy_tail_alphas"])
    measured = [len(a) > 0 for a in alphas]
    assert measured == list(hf_models["train"]["is_metric_epoch"])
    assert any(measured) and not all(measured)


def test_model_rows_carry_their_cells_phase_and_means(hf_models, tiny_zoo):
    cells = {r["cell_id"]: r for r in ZooReader(tiny_zoo).table("cells").to_pylist()}
    for row in hf_models["train"].remove_columns("weights"):
        cell = cells[row["cell_id"]]
        assert row["phase"] == cell["phase"]
        for name in ("cka_mean", "mc_test_error_mean", "linear_barrier_train_loss_mean"):
            assert row[name] == cell[name] or (np.isnan(row[name]) and np.isnan(cell[name]))
    ds = ZooDataset(tiny_zoo, split="all", targets=["phase"])
    assert all(ds.metadata(i)["phase"] == cells[ds.metadata(i)["cell_id"]]["phase"]
               for i in range(len(ds)))


def test_streaming_reads_the_shards_in_place(tiny_zoo):
    import datasets

    stream = datasets.load_dataset(str(tiny_zoo), split="train+validation+test",
                                   streaming=True)
    rows = list(stream)
    assert len(rows) == 24
    ours = ZooDataset(tiny_zoo, split="all", epochs="all", representation="state_dict")
    index = {(ours[i]["model_id"], ours[i]["epoch"]): i for i in range(len(ours))}
    for row in rows:
        state = ours[index[row["model_id"], int(row["epoch"])]]["weights"]
        assert torch.equal(torch.cat([t.reshape(-1).float() for t in state.values()]),
                           weights(row))


def test_cells_config_loads_by_name_with_the_same_splits(tiny_zoo, tmp_path):
    import datasets

    cells = datasets.load_dataset(str(tiny_zoo), "cells", cache_dir=str(tmp_path))
    assert {name: part.num_rows for name, part in cells.items()} == {
        "train": 2, "validation": 1, "test": 1}
    assert "phase" in cells["train"].column_names


def test_card_metadata_is_valid_hub_card_data_with_features_of_the_schema(tiny_zoo):
    import datasets
    from huggingface_hub import DatasetCard

    from zoo.folder.schema import TABLES, arrow_schema

    card = DatasetCard.load(tiny_zoo / "README.md")
    data = card.data
    assert data.size_categories == ["n<1K"] and "tabular-regression" in data.task_categories
    assert data.license == "cc-by-4.0"
    infos = {info["config_name"]: info for info in data.dataset_info}
    assert set(infos) == {*TABLES, "layouts"}
    for table, info in ((t, infos[t]) for t in TABLES):
        expected = datasets.Features.from_arrow_schema(arrow_schema(table))._to_yaml_list()
        assert info["features"] == expected
    assert {s["name"]: s["num_examples"] for s in infos["models"]["splits"]} == {
        "train": 12, "validation": 6, "test": 6}
    assert "@misc{phase_zoo" in card.text


def test_layouts_config_gives_every_layouts_weight_shapes(tiny_zoo, tmp_path):
    import datasets

    layouts = datasets.load_dataset(str(tiny_zoo), "layouts", split="train",
                                    cache_dir=str(tmp_path))
    reader = ZooReader(tiny_zoo)
    expected = [(key, e.name, list(e.shape), e.dtype, e.offset, e.size)
                for key in sorted(reader.manifest.layouts) for e in reader.layout(key).entries]
    assert len(reader.manifest.layouts) == 2
    assert [(r["layout"], r["name"], r["shape"], r["dtype"], r["offset"], r["size"])
            for r in layouts] == expected
    assert {(r["layout"], r["width"]) for r in layouts} == {
        (k, reader.layout(k).width) for k in reader.manifest.layouts}
