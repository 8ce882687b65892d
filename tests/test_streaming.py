"""ZooStream: each row once per epoch over ranks and workers, seeded epoch orders, resuming
after k batches, items equal to ZooDataset's; HF streaming over every config and split."""

from collections import Counter

import pytest
import torch

from loaders import Augment, StreamLoader, ZooDataset, ZooStream, pad_collate
from loaders.streaming import _batches_done
from zoo.folder.reader import ZooReader
from zoo.folder.splits import FRACTIONS, owners


def keys(batches):
    """(model_id, epoch) of every item of `batches`, in order."""
    return [(m, int(e)) for b in batches for m, e in zip(b["model_id"], b["epoch"])]


def item_keys(stream):
    return [(item["model_id"], item["epoch"]) for item in stream]


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_and_workers_see_every_row_exactly_once_per_epoch(tiny_zoo, workers):
    every = item_keys(ZooStream(tiny_zoo, split="all", epochs="all", shuffle=False))
    assert len(every) == len(set(every)) == 24
    for epoch in (0, 1):
        seen = Counter()
        for rank in range(2):
            stream = ZooStream(tiny_zoo, split="all", epochs="all", rank=rank, world_size=2,
                               seed=7, buffer_size=3)
            stream.set_epoch(epoch)
            batches = list(StreamLoader(stream, batch_size=4, num_workers=workers,
                                        collate_fn=pad_collate))
            assert sum(len(b["model_id"]) for b in batches) == len(stream) == 12
            seen.update(keys(batches))
        assert seen == Counter(every)


def test_epochs_change_the_order_and_the_seed_fixes_it(tiny_zoo):
    stream = ZooStream(tiny_zoo, split="all", epochs="all", seed=1, buffer_size=4)
    first, again = item_keys(stream), item_keys(stream)
    stream.set_epoch(1)
    second = item_keys(stream)
    assert first == again and first != second and sorted(first) == sorted(second)
    assert item_keys(ZooStream(tiny_zoo, split="all", epochs="all", seed=1,
                               buffer_size=4)) == first
    assert item_keys(ZooStream(tiny_zoo, split="all", epochs="all", seed=2,
                               buffer_size=4)) != first


@pytest.mark.parametrize("workers,batch_size,drop_last", [(0, 5, False), (2, 3, False),
                                                          (2, 5, False), (3, 4, True)])
def test_a_resumed_loader_continues_identically(tiny_zoo, workers, batch_size, drop_last):
    def loader():
        stream = ZooStream(tiny_zoo, epochs="all", seed=4, buffer_size=5,
                           augment=Augment(additive_noise=0.1, seed=3))
        stream.set_epoch(2)
        return StreamLoader(stream, batch_size=batch_size, num_workers=workers,
                            drop_last=drop_last, collate_fn=pad_collate)

    full = list(loader())
    for k in sorted({0, 1, 2, len(full) // 2, len(full) - 1, len(full)}):
        first = loader()
        iterator = iter(first)
        for _ in range(k):
            next(iterator)
        state = first.state_dict()
        assert state == {"seed": 4, "epoch": 2, "batches": k}
        resumed = loader()
        resumed.stream.set_epoch(0)  # load_state_dict brings the epoch back
        resumed.load_state_dict(state)
        rest = list(resumed)
        assert keys(rest) == keys(full[k:])
        assert all(torch.equal(a["weights"], b["weights"]) for a, b in zip(rest, full[k:]))
        assert keys(list(resumed)) == keys(full)  # the next pass starts from its beginning


def test_a_resumed_stream_continues_identically_in_one_process(tiny_zoo):
    stream = ZooStream(tiny_zoo, split="all", epochs="all", seed=9)
    stream.set_epoch(3)
    full, iterator = item_keys(stream), iter(stream)
    head = [next(iterator) for _ in range(10)]
    again = ZooStream(tiny_zoo, split="all", epochs="all", seed=9)
    again.load_state_dict(stream.state_dict())
    assert [(i["model_id"], i["epoch"]) for i in head] + item_keys(again) == full
    with pytest.raises(ValueError, match="seed 9 differs"):
        ZooStream(tiny_zoo, seed=8).load_state_dict(stream.state_dict())


def test_batches_go_round_robin_skipping_exhausted_workers():
    assert _batches_done(0, 2, False, [4, 4]) == ([0, 0], 0)
    assert _batches_done(3, 2, False, [4, 4]) == ([2, 1], 1)
    assert _batches_done(4, 2, False, [5, 1, 4]) == ([2, 1, 1], 1)  # worker 1: one batch
    assert _batches_done(5, 2, False, [5, 1, 4]) == ([2, 1, 2], 0)
    assert _batches_done(6, 2, True, [5, 1, 4]) == ([2, 0, 2], 0)  # drop_last: 4 in all


def test_stream_items_are_the_map_style_items(tiny_zoo):
    options = dict(split="train", epochs="all", representation="tokens", normalize="layer",
                   targets=["test_loss"], augment=Augment(permute=True, seed=2), window=8,
                   token_size=4)
    stream = ZooStream(tiny_zoo, seed=5, **options)
    dataset = ZooDataset(tiny_zoo, **options)
    stream.set_epoch(1)
    dataset.set_epoch(1)
    index = {(dataset[i]["model_id"], dataset[i]["epoch"]): i for i in range(len(dataset))}
    items = list(stream)
    assert len(items) == len(dataset)
    for item in items:
        expected = dataset[index[item["model_id"], item["epoch"]]]
        assert all(torch.equal(item[k], expected[k]) for k in ("weights", "mask", "positions"))
        assert torch.equal(item["targets"], expected["targets"])


@pytest.mark.parametrize("option,value,message", [
    ("seed", -1, "seed: -1 is not allowed"), ("buffer_size", 0, "buffer_size: 0 is not allowed"),
    ("rank", 2, "rank, world_size: 2, 2 is not allowed")])
def test_bad_stream_options_are_refused(tiny_zoo, option, value, message):
    with pytest.raises(ValueError, match=message):
        ZooStream(tiny_zoo, world_size=2, **{option: value})


def test_hf_streaming_reads_every_config_and_split_in_place(tiny_zoo, tmp_path):
    import datasets

    reader = ZooReader(tiny_zoo)
    owner = owners(sorted({s.cell_id for s in reader.manifest.shards}), FRACTIONS)
    hf = {"train": "train", "val": "validation", "test": "test"}
    cache = tmp_path / "cache"
    for config in ("models", "cells", "pairs"):
        table = reader.table(config, columns=["cell_id"]).column("cell_id").to_pylist()
        for ours, theirs in hf.items():
            stream = datasets.load_dataset(str(tiny_zoo), config, split=theirs,
                                           streaming=True, cache_dir=str(cache))
            assert isinstance(stream, datasets.IterableDataset)
            cells = [row["cell_id"] for row in stream]
            assert Counter(cells) == Counter(c for c in table if owner[c] == ours)
    copies = [p for p in cache.rglob("*") if p.suffix in (".arrow", ".parquet")]
    assert copies == []
    card = (tiny_zoo / "README.md").read_text()
    assert "larger than memory or disk: streaming=True" in card and "ZooStream" in card
