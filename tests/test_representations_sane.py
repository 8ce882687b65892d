"""token_layout="sane": SANE's token count, order and positions, exact decode, automatic size."""

import math

import pytest
import torch
from torch.utils.data import DataLoader

from loaders import ZooDataset, pad_collate
from loaders.batching import window
from loaders.representations import make_encoder
from tests.test_representations import DIGITS, SIGNAL, assert_same_state, random_layout, \
    stored_rows
from zoo import architectures


def sane_layers_by_hand(state, ignore_bn):
    """SANE's tokenize_checkpoint rule written out on state_dict shapes: (name, rows, values
    per row) per layer; a BatchNorm is named bn*/downsample.1 in the ResNets."""
    layers = []
    for name, tensor in state.items():
        if ignore_bn and ("bn" in name or "downsample.1" in name):
            continue
        if name.endswith("weight"):
            bias = name[:-len("weight")] + "bias" in state
            layers.append((name, tensor.shape[0], tensor[0].numel() + bias))
        elif name.endswith(("running_mean", "running_var")):
            layers.append((name, tensor.shape[0], 1))
    return layers


@pytest.mark.parametrize("ignore_bn,layer_count", [(False, 81), (True, 21)])
@pytest.mark.parametrize("token_size", [5, 16, 0])
def test_sane_tokens_of_a_resnet18_count_order_and_place_as_sane_does(ignore_bn, layer_count,
                                                                      token_size):
    layout, flat = random_layout("resnet18", DIGITS, 2)
    torch.manual_seed(0)
    state = architectures.build("resnet18", width=2, info=DIGITS).state_dict()
    layers = sane_layers_by_hand(state, ignore_bn)
    assert len(layers) == layer_count
    size = token_size or max(values for _, _, values in layers)
    item = make_encoder("tokens", layout, token_size, token_layout="sane",
                        ignore_bn=ignore_bn).encode(flat)
    chunks = [math.ceil(values / size) for _, _, values in layers]
    assert item["weights"].shape == (sum(r * c for (_, r, _), c in zip(layers, chunks)), size)
    expected = [[layer, unit] for layer, ((_, rows, _), c) in enumerate(zip(layers, chunks))
                for unit in range(rows) for _ in range(c)]
    positions = item["positions"]
    assert positions[:, 1:].tolist() == expected
    assert torch.equal(positions[:, 0], torch.arange(len(expected)))
    assert item["mask"].sum(1).tolist() == [
        min(size, values - size * part) for (_, rows, values), c in zip(layers, chunks)
        for _ in range(rows) for part in range(c)]
    conv1 = next(e for e in layout.entries if e.name == "conv1.weight")
    first = flat[conv1.offset:conv1.offset + conv1.size // conv1.shape[0]]  # unit 0, no bias
    assert torch.equal(item["weights"][:chunks[0]][item["mask"][:chunks[0]]], first)
    if not ignore_bn:  # bn1 after conv1: (weight, bias) per unit, then running mean, var
        bn1 = {e.name: e for e in layout.entries}
        start = layers[0][1] * chunks[0]
        pair = [flat[bn1[f"bn1.{p}"].offset] for p in ("weight", "bias")]
        assert item["weights"][start, :2].tolist() == [float(v) for v in pair]
        assert layers[1:4] == [("bn1.weight", 2, 2), ("bn1.running_mean", 2, 1),
                               ("bn1.running_var", 2, 1)]


@pytest.mark.parametrize("family,info,width,args", [
    ("resnet18", DIGITS, 2, {}), ("resnet50", DIGITS, 2, {}), ("mlp", SIGNAL, 5, {"depth": 2}),
    ("cnn", SIGNAL, 3, {"batch_norm": True})])
@pytest.mark.parametrize("ignore_bn", [False, True])
@pytest.mark.parametrize("counters", [False, True])
def test_sane_tokens_decode_to_the_exact_weights(family, info, width, args, ignore_bn, counters):
    if ignore_bn and args.get("batch_norm"):
        pytest.skip("refused, see test_ignore_bn_refuses_a_batchnorm_sane_would_miss")
    layout, flat = random_layout(family, info, width, **args)
    for token_size in (0, 7):
        encoder = make_encoder("tokens", layout, token_size, counters, "sane", ignore_bn)
        item = encoder.encode(flat)
        extras = " ".join(item["extras"])
        assert ("num_batches_tracked" in extras) == (counters and family != "mlp")
        assert ("bn1.weight" in extras) == (ignore_bn and family != "mlp")
        assert torch.equal(encoder.decode(item), flat)


def test_token_size_zero_is_the_widest_row_so_no_row_is_cut():
    layout, flat = random_layout("resnet18", DIGITS, 2)
    item = make_encoder("tokens", layout, 0, token_layout="sane").encode(flat)
    assert item["weights"].shape[1] == 16 * 3 * 3  # layer4's convs: 16 channels in, 3 x 3
    assert item["positions"][:, 1:].unique(dim=0).shape[0] == len(item["positions"])
    neurons = make_encoder("tokens", layout, 0).encode(flat)  # ours: + BN's 4 values per unit
    assert neurons["weights"].shape[1] == 16 * 9 + 4


def test_ignore_bn_refuses_a_batchnorm_sane_would_miss():
    layout, _ = random_layout("cnn", SIGNAL, 3, batch_norm=True)  # BatchNorm named "2."
    with pytest.raises(ValueError, match="ignore_bn: layout .* BatchNorm '2.'"):
        make_encoder("tokens", layout, 8, token_layout="sane", ignore_bn=True)


@pytest.mark.parametrize("option,value", [("token_layout", "graph"), ("ignore_bn", True),
                                          ("token_size", -1)])
def test_bad_token_options_are_refused_by_name(tiny_zoo, option, value):
    with pytest.raises(ValueError, match=f"{option}: "):
        ZooDataset(tiny_zoo, representation="tokens", **{option: value})


def test_a_dataset_of_two_widths_takes_one_automatic_token_size(tiny_zoo):
    stored = stored_rows(tiny_zoo)
    ds = ZooDataset(tiny_zoo, split="all", representation="tokens", token_size=0,
                    token_layout="sane")
    assert {ds[i]["weights"].shape[1] for i in range(len(ds))} == {40 + 1}  # mnist1d inputs
    assert {ds[i]["weights"].shape[0] for i in range(len(ds))} == {4 + 10, 8 + 10}
    for index in range(len(ds)):
        item = ds[index]
        assert_same_state(ds.decode(item), stored[item["model_id"], item["epoch"]])
    batch = next(iter(DataLoader(ds, batch_size=len(ds), collate_fn=pad_collate)))
    assert batch["weights"].shape == (len(ds), 18, 41) and batch["extras"] == {}


def test_windows_of_two_widths_with_ignore_bn_stack_without_their_extras():
    items = []
    for width in (2, 3):
        layout, flat = random_layout("resnet18", DIGITS, width)
        item = make_encoder("tokens", layout, 8, token_layout="sane", ignore_bn=True).encode(flat)
        assert "bn1.weight" in item["extras"]
        items.append(window(item, 16, torch.Generator().manual_seed(0)))
    assert all("extras" not in item for item in items)
    batch = torch.utils.data.default_collate(items)
    assert batch["weights"].shape == (2, 16, 8) and batch["positions"].shape == (2, 16, 3)
