"""Hugging Face datasets reads the zoo folder: torch format, streaming, same weights as ours."""

import pytest
import torch

from loaders import ZooDataset


@pytest.fixture(scope="module")
def hf_models(tiny_zoo, tmp_path_factory):
    import datasets

    cache = tmp_path_factory.mktemp("hf-cache")
    return datasets.load_dataset(str(tiny_zoo), split="train", cache_dir=str(cache))


def test_torch_format_yields_weight_tensors(hf_models):
    row = hf_models.with_format("torch")[0]
    assert isinstance(row["weights"], torch.Tensor)
    assert row["weights"].dtype == torch.float32 and row["weights"].ndim == 1
    assert row["weights"].numel() == int(row["num_params"])


def test_hf_and_zoo_dataset_give_the_same_weights_for_the_same_row(hf_models, tiny_zoo):
    ours = ZooDataset(tiny_zoo, split="all", epochs="all")
    index = {(ours[i]["model_id"], ours[i]["epoch"]): i for i in range(len(ours))}
    theirs = hf_models.with_format("torch")
    assert len(theirs) == len(ours)
    for row in theirs:
        item = ours[index[row["model_id"], int(row["epoch"])]]
        assert item["layout"] == row["layout"]
        assert torch.equal(item["weights"], row["weights"])


def test_streaming_reads_the_shards_in_place(tiny_zoo):
    import datasets

    stream = datasets.load_dataset(str(tiny_zoo), split="train", streaming=True)
    rows = list(stream.with_format("torch"))
    assert len(rows) == 24
    ours = ZooDataset(tiny_zoo, split="all", epochs="all", representation="state_dict")
    index = {(ours[i]["model_id"], ours[i]["epoch"]): i for i in range(len(ours))}
    for row in rows:
        state = ours[index[row["model_id"], int(row["epoch"])]]["weights"]
        assert torch.equal(torch.cat([t.reshape(-1).float() for t in state.values()]),
                           row["weights"])


def test_cells_config_loads_by_name(tiny_zoo, tmp_path):
    import datasets

    cells = datasets.load_dataset(str(tiny_zoo), "cells", split="train", cache_dir=str(tmp_path))
    assert cells.num_rows == 4 and "phase" in cells.column_names
