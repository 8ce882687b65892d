"""Representations: each round-trips to the exact stored state_dict; shapes, masks, positions."""

import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from loaders import Augment, ZooDataset
from loaders.representations import (REPRESENTATIONS, STATISTICS, Layers, Tokens, make_encoder,
                                      statistics)
from zoo import architectures
from zoo.datasets.base import DataInfo
from zoo.folder.reader import ZooReader
from zoo.layout import layout_of

INVERTIBLE = [r for r in REPRESENTATIONS if r != "stats"]
DIGITS = DataInfo("classification", (1, 8, 8), 10)
SIGNAL = DataInfo("classification", (40,), 10)


def stored_rows(root):
    """(model_id, epoch) -> stored state_dict, read straight from the Parquet shards."""
    reader = ZooReader(root)
    rows = {}
    for shard in reader.manifest.shards_of("models"):
        for row in pq.read_table(reader.path(shard)).to_pylist():
            layout = reader.layout(row["layout"])
            flat = np.frombuffer(row["weights"], "<f4")
            rows[row["model_id"], row["epoch"]] = layout.unflatten(flat)
    return rows


def assert_same_state(actual, expected):
    assert list(actual) == list(expected)
    for name in expected:
        assert actual[name].dtype == expected[name].dtype, name
        assert torch.equal(actual[name], expected[name]), name


@pytest.mark.parametrize("representation", INVERTIBLE)
def test_every_representation_round_trips_to_the_stored_state_dict(tiny_zoo, representation):
    stored = stored_rows(tiny_zoo)
    ds = ZooDataset(tiny_zoo, split="all", epochs="all", representation=representation,
                    token_size=16)
    assert len(ds) == len(stored)
    for index in range(len(ds)):
        item = ds[index]
        assert_same_state(ds.decode(item), stored[item["model_id"], item["epoch"]])


def random_layout(family, info, width, **args):
    """A model's layout and a random flat vector (integer buffers hold small integers)."""
    torch.manual_seed(0)
    model = architectures.build(family, width=width, info=info, args=args)
    layout = layout_of(model, family, width, args)
    flat = torch.randn(layout.size)
    for entry in layout.entries:
        if entry.dtype == "int64":
            flat[entry.offset:entry.offset + entry.size] = 7
    return layout, flat


@pytest.mark.parametrize("family,info,width,args", [
    ("cnn", SIGNAL, 3, {"batch_norm": True}), ("resnet18", DIGITS, 2, {}),
    ("resnet50", DIGITS, 2, {}), ("mlp", SIGNAL, 5, {"depth": 2})])
@pytest.mark.parametrize("representation", INVERTIBLE)
def test_encoders_round_trip_batchnorm_and_residual_layouts(family, info, width, args,
                                                           representation):
    layout, flat = random_layout(family, info, width, **args)
    encoder = make_encoder(representation, layout, token_size=5)
    assert torch.equal(encoder.decode(encoder.encode(flat)), flat)


def test_flat_and_state_dict_items_are_views_of_the_stored_array(tiny_zoo):
    flat = ZooDataset(tiny_zoo, split="all")
    state = ZooDataset(tiny_zoo, split="all", representation="state_dict")
    array = flat._store.arrays[flat[0]["layout"]]
    start, stop = array.ctypes.data, array.ctypes.data + array.nbytes
    assert start <= flat[0]["weights"].data_ptr() < stop
    array = state._store.arrays[state[0]["layout"]]
    start, stop = array.ctypes.data, array.ctypes.data + array.nbytes
    first = state[0]["weights"]
    assert all(start <= t.data_ptr() < stop for t in first.values())
    assert [tuple(t.shape) for t in first.values()] == [e.shape for e in state.layouts[
        state[0]["layout"]].entries]


def test_layers_are_nfn_weight_bias_pairs_with_a_channel_axis():
    layout, flat = random_layout("cnn", SIGNAL, 3, batch_norm=True)
    item = Layers(layout).encode(flat)
    assert [(tuple(w.shape), tuple(b.shape)) for w, b in item["weights"]] == [
        ((1, 3, 1, 3), (1, 3)), ((1, 3, 3, 3), (1, 3)), ((1, 10, 3), (1, 10))]
    assert torch.equal(item["weights"][0][1], torch.zeros(1, 3))  # conv before BN has no bias
    assert sorted(item["extras"]) == sorted(
        f"{m}.{s}" for m in (2, 6) for s in ("weight", "bias", "running_mean", "running_var",
                                             "num_batches_tracked"))


def test_tokens_hold_each_neuron_row_chunked_and_zero_padded():
    layout, flat = random_layout("mlp", SIGNAL, 5, depth=1)  # 1.weight (5, 40), 3.weight (10, 5)
    item = Tokens(layout, token_size=16).encode(flat)
    tokens, mask, positions = item["weights"], item["mask"], item["positions"]
    # layer 0: 5 neurons x (40 weights + bias) = 41 values -> 3 tokens; layer 1: 10 x 6 -> 1
    assert tokens.shape == (5 * 3 + 10, 16)
    assert int(mask.sum()) == layout.size
    assert torch.equal(tokens[~mask], torch.zeros(int((~mask).sum())))
    row = torch.cat([flat[0:40], flat[200:201]])  # neuron 0: its 40 weights, then its bias
    assert torch.equal(tokens[:3][mask[:3]], row)
    assert positions[:4].tolist() == [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 1]]
    assert positions[15].tolist() == [15, 1, 0] and positions[-1].tolist() == [24, 1, 9]


def test_tokens_batch_through_a_dataloader(tiny_zoo):
    ds = ZooDataset(tiny_zoo, split="all", representation="tokens", token_size=8,
                    where={"width": 8}, targets=["test_accuracy"])
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["weights"].shape[0] == 3 and batch["weights"].shape[2] == 8
    assert batch["mask"].shape == batch["weights"].shape
    assert batch["positions"].shape == (3, batch["weights"].shape[1], 3)
    assert batch["targets"].shape == (3, 1)


def test_unknown_representation_is_refused(tiny_zoo):
    with pytest.raises(ValueError, match="representation: 'graph' is not allowed"):
        ZooDataset(tiny_zoo, representation="graph")


def test_layers_batch_into_nfn_shapes(tiny_zoo):
    ds = ZooDataset(tiny_zoo, split="all", representation="layers", where={"width": 8})
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert [(tuple(w.shape), tuple(b.shape)) for w, b in batch["weights"]] == [
        ((4, 1, 8, 40), (4, 1, 8)), ((4, 1, 10, 8), (4, 1, 10))]
    assert batch["extras"] == {}


def test_stats_are_unterthiners_per_layer_statistics_of_every_row(tiny_zoo):
    ds = ZooDataset(tiny_zoo, split="all", epochs="all", representation="stats")
    flat = ZooDataset(tiny_zoo, split="all", epochs="all")
    for i in range(len(ds)):
        layout = ds.layouts[ds[i]["layout"]]
        state = layout.unflatten(flat[i]["weights"])
        expected = []
        for name, value in state.items():  # one by one, the way users hand-wrote it
            value = value.double().numpy().ravel()
            expected += [value.mean(), value.var(), *np.percentile(value, [0, 25, 50, 75, 100])]
        np.testing.assert_allclose(ds[i]["weights"].numpy(), np.float32(expected), rtol=1e-6)
        assert ds[i]["weights"].shape == (len(STATISTICS) * 4,)  # 2 layers x weight, bias
    with pytest.raises(ValueError, match="'stats' is not invertible"):
        ds.decode(ds[0])


def test_stats_of_a_thousand_rows_take_well_under_a_second():
    info = SIGNAL
    model = architectures.build("mlp", width=64, info=info, args={"depth": 2})
    layout = layout_of(model, "mlp", 64, {"depth": 2})
    rows = np.random.default_rng(0).standard_normal((1000, layout.size), np.float32)
    start = time.perf_counter()
    values = statistics(rows, layout)
    assert time.perf_counter() - start < 1.0
    assert values.shape == (1000, 6 * len(STATISTICS))
    np.testing.assert_allclose(values[7, 2:7], np.quantile(rows[7, :64 * 40].astype(np.float64),
                                                           [0, .25, .5, .75, 1]), rtol=1e-6)


def test_stats_rows_of_several_widths_stack_in_the_default_collate(tiny_zoo):
    ds = ZooDataset(tiny_zoo, split="all", epochs="all", representation="stats")
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    assert batch["weights"].shape == (len(ds), 28) and len(set(batch["layout"])) == 2


def test_stats_of_permuted_items_equal_the_precomputed_stats(tiny_zoo):
    plain = ZooDataset(tiny_zoo, representation="stats", normalize="layer")
    permuted = ZooDataset(tiny_zoo, representation="stats", normalize="layer",
                          augment=Augment(permute=True, seed=1))
    for i in range(len(plain)):  # a permutation keeps every entry's values, so its statistics
        torch.testing.assert_close(permuted[i]["weights"], plain[i]["weights"],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("representation", ["flat", "layers", "tokens"])
def test_counters_stay_out_of_learning_representations_unless_asked(representation):
    layout, flat = random_layout("resnet18", DIGITS, 2)  # counters hold 7
    counters = [e.name for e in layout.entries if e.dtype == "int64"]
    assert len(counters) == 20
    item = make_encoder(representation, layout, token_size=5).encode(flat)
    values = item["weights"]
    values = torch.cat([t.reshape(-1) for pair in values for t in pair] + [
        t.reshape(-1) for t in item["extras"].values()]) if representation == "layers" else values
    assert not (values == 7).any()
    assert sorted(item["buffers"]) == sorted(counters)
    kept = make_encoder(representation, layout, token_size=5, counters=True).encode(flat)
    assert "buffers" not in kept
    if representation == "flat":
        assert values.numel() == layout.size - 20 and torch.equal(kept["weights"], flat)
    state = make_encoder("state_dict", layout).encode(flat)["weights"]
    assert all(state[name].dtype == torch.int64 and int(state[name]) == 7 for name in counters)
