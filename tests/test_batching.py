"""Batches of mixed widths: padding collate, layout sampler, token windows, the clear error."""

import pytest
import torch
from torch.utils.data import DataLoader

from loaders import LayoutBatchSampler, ZooDataset, pad_collate
from loaders.batching import pad_stack
from zoo.errors import ZooError


def every(tiny_zoo, **options):
    return ZooDataset(tiny_zoo, split="all", epochs="all", **options)


@pytest.mark.parametrize("representation", ["tokens", "layers", "flat", "state_dict"])
def test_default_collate_names_the_layouts_and_the_ways_out(tiny_zoo, representation):
    ds = every(tiny_zoo, representation=representation, token_size=8)
    assert len(ds.layouts) == 2
    with pytest.raises(ZooError, match=r"mixes layouts mlp-w4-\w+, mlp-w8-\w+ .*pad_collate.*"
                                       r"LayoutBatchSampler"):
        next(iter(DataLoader(ds, batch_size=len(ds))))


def test_pad_collate_pads_tokens_with_masks_that_keep_every_value(tiny_zoo):
    ds = every(tiny_zoo, representation="tokens", token_size=8)
    batch = next(iter(DataLoader(ds, batch_size=len(ds), collate_fn=pad_collate)))
    longest = max(ds[i]["weights"].shape[0] for i in range(len(ds)))
    assert batch["weights"].shape == (len(ds), longest, 8)
    for i in range(len(ds)):
        item = ds[i]
        count = item["weights"].shape[0]
        assert torch.equal(batch["weights"][i, :count], item["weights"])
        assert torch.equal(batch["mask"][i, :count], item["mask"])
        assert torch.equal(batch["positions"][i, :count], item["positions"])
        assert batch["token_mask"][i].sum() == count and not batch["mask"][i, count:].any()
        assert batch["weights"][i, count:].abs().sum() == 0
        assert batch["layout"][i] == item["layout"]


def test_pad_collate_pads_layers_so_a_padded_mlp_computes_the_same_function(tiny_zoo):
    ds = every(tiny_zoo, representation="layers")
    batch = next(iter(DataLoader(ds, batch_size=len(ds), collate_fn=pad_collate)))
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    for i in range(len(ds)):
        model = ds.load_model(i)
        h = x
        for number, ((w, b), (wm, bm)) in enumerate(zip(batch["weights"], batch["masks"])):
            real_w, real_b = ds[i]["weights"][number]
            assert wm[i].sum() == real_w.numel() and bm[i].sum() == real_b.numel()
            h = h @ w[i, 0].T + b[i, 0]
            h = torch.relu(h) if number < len(batch["weights"]) - 1 else h
        torch.testing.assert_close(h, model(x), rtol=1e-5, atol=1e-5)


def test_pad_collate_pads_flat_vectors_and_refuses_state_dicts(tiny_zoo):
    ds = every(tiny_zoo)
    batch = pad_collate([ds[0], ds[len(ds) - 1]])
    sizes = [ds[0]["weights"].numel(), ds[len(ds) - 1]["weights"].numel()]
    assert batch["weights"].shape == (2, max(sizes)) and batch["mask"].sum(1).tolist() == sizes
    with pytest.raises(ZooError, match="'state_dict' cannot be padded"):
        pad_collate([every(tiny_zoo, representation="state_dict")[0]])
    with pytest.raises(ZooError, match=r"cannot pad tensors of \[1, 2\] dimensions"):
        pad_stack([torch.zeros(2), torch.zeros(2, 2)])


def test_layout_sampler_gives_one_layout_per_batch_and_every_row_once(tiny_zoo):
    ds = every(tiny_zoo, representation="state_dict")
    sampler = LayoutBatchSampler(ds, 5, shuffle=True, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6  # 12 rows per layout: 5 + 5 + 2, twice
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    for indices in batches:
        assert len({ds.row_layouts[i] for i in indices}) == 1
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    loader = DataLoader(ds, batch_sampler=LayoutBatchSampler(ds, 5, drop_last=True))
    assert [len(b["model_id"]) for b in loader] == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="batch_size: 0 is not allowed"):
        LayoutBatchSampler(ds, 0)


def test_token_windows_cut_sane_windows_that_stack_across_widths(tiny_zoo):
    full = every(tiny_zoo, representation="tokens", token_size=8)
    windows = every(tiny_zoo, representation="tokens", token_size=8, window=20)
    batch = next(iter(DataLoader(windows, batch_size=len(windows))))
    assert batch["weights"].shape == (len(windows), 20, 8)
    for i in range(len(full)):
        tokens, cut = full[i], windows[i]
        start = int(cut["positions"][0, 0])  # positions[:, 0] is the token index
        assert torch.equal(cut["weights"], tokens["weights"][start:start + 20])
        assert torch.equal(cut["mask"], tokens["mask"][start:start + 20])
    starts = [int(windows[i]["positions"][0, 0]) for i in range(len(windows))]
    assert starts == [int(windows[i]["positions"][0, 0]) for i in range(len(windows))]
    windows.set_epoch(1)
    assert starts != [int(windows[i]["positions"][0, 0]) for i in range(len(windows))]
    long = every(tiny_zoo, representation="tokens", token_size=64, window=400)[0]
    count = every(tiny_zoo, representation="tokens", token_size=64)[0]["weights"].shape[0]
    assert long["weights"].shape == (400, 64) and not long["mask"][count:].any()
    with pytest.raises(ValueError, match="window: 4 is not allowed for representation 'flat'"):
        every(tiny_zoo, window=4)
