"""Lazy ZooDataset: rows read on demand equal rows read at once, checked a row group at a
time, in DataLoader workers of either start method; format-3 zoos still load."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

import loaders.dataset
from loaders import Augment, StreamLoader, ZooDataset, ZooStream, pad_collate
from loaders.rowsource import ByteCache
from zoo.errors import IntegrityError
from zoo.folder import modelshards
from zoo.folder.manifest import read_manifest
from zoo.folder.names import FORMAT_VERSION
from zoo.folder.reader import ZooReader
from zoo.folder.plainpages import row_pieces
from zoo.folder.rowgroups import CheckedShard, chunk_spans
from zoo.layout import Entry, Layout

FIXTURES = Path(__file__).parent / "fixtures"


def same(a, b):
    """Items equal bit for bit, nested dicts and lists of tensors included."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("representation", ["flat", "layers", "tokens", "state_dict", "stats"])
@pytest.mark.parametrize("normalize", [None, "layer"])
def test_lazy_items_are_the_in_memory_items(tiny_zoo, representation, normalize):
    for split in ("train", "test"):
        options = dict(split=split, split_by="model", epochs="all", representation=representation,
                       normalize=normalize, targets=["test_loss", "phase"])
        ours = ZooDataset(tiny_zoo, in_memory=False, cache_bytes=2048, **options)
        whole = ZooDataset(tiny_zoo, in_memory=True, **options)
        assert ours.lazy and not whole.lazy and len(ours) == len(whole) > 0
        assert all(same(ours[i], whole[i]) for i in range(len(whole)))
        if representation in ("flat", "stats"):
            for key in whole.layouts:
                assert all(np.array_equal(a, b) for a, b in zip(ours.arrays(key),
                                                                whole.arrays(key)))


def test_lazy_augmentation_models_and_decode_match(tiny_zoo):
    augment = Augment(permute=True, additive_noise=0.01, seed=5)
    ours = ZooDataset(tiny_zoo, in_memory=False, augment=augment, epochs="all")
    whole = ZooDataset(tiny_zoo, in_memory=True, augment=augment, epochs="all")
    for epoch in (0, 1):
        ours.set_epoch(epoch)
        whole.set_epoch(epoch)
        assert all(same(ours[i], whole[i]) for i in range(len(whole)))
    state = ours.load_model(0).state_dict()
    assert same(state, whole.load_model(0).state_dict())
    plain = ZooDataset(tiny_zoo, in_memory=False, epochs="all")
    assert same(plain.decode(plain[1]), ZooDataset(tiny_zoo, in_memory=True,
                                                   epochs="all").decode(plain[1]))


def test_small_zoos_are_read_at_once_unless_asked(tiny_zoo, monkeypatch):
    assert not ZooDataset(tiny_zoo).lazy
    monkeypatch.setattr(loaders.dataset, "IN_MEMORY_BYTES", 100)
    assert ZooDataset(tiny_zoo).lazy and not ZooDataset(tiny_zoo, in_memory=True).lazy
    with pytest.raises(ValueError, match="in_memory: 'yes' is not allowed"):
        ZooDataset(tiny_zoo, in_memory="yes")
    with pytest.raises(ValueError, match="cache_bytes: -1 is not allowed"):
        ZooDataset(tiny_zoo, in_memory=False, cache_bytes=-1)


def test_byte_cache_keeps_the_latest_within_its_bound():
    cache, loads = ByteCache(100), []

    def load(key, size):
        return lambda: loads.append(key) or (key, size)

    for key in ("a", "b", "c"):
        assert cache.get(key, load(key, 40)) == key
    assert cache.used == 80 and list(cache.items) == ["b", "c"]
    cache.get("b", load("b", 40))  # held: not loaded again, now the latest
    cache.get("huge", load("huge", 101))  # larger than the bound: served, not kept
    cache.get("d", load("d", 40))
    assert loads == ["a", "b", "c", "huge", "d"] and list(cache.items) == ["b", "d"]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_open_their_own_files_and_return_the_same_rows(tiny_zoo, context):
    ours = ZooDataset(tiny_zoo, in_memory=False, split="all", epochs="all", cache_bytes=4096)
    ours[0]  # the parent's cache holds a row group: workers must not need it
    loader = DataLoader(ours, batch_size=5, num_workers=2, multiprocessing_context=context,
                        collate_fn=pad_collate)
    rows = torch.cat([b["weights"][b["mask"]] if "mask" in b else b["weights"].reshape(-1)
                      for b in loader])
    whole = ZooDataset(tiny_zoo, in_memory=True, split="all", epochs="all")
    expected = torch.cat([whole[i]["weights"] for i in range(len(whole))])
    assert torch.equal(rows, expected)


def test_a_batch_of_flat_rows_is_read_into_the_tensor_the_collate_hands_on(tiny_zoo):
    whole = ZooDataset(tiny_zoo, in_memory=True, split="all", epochs="all")
    key = sorted(whole.layouts)[0]
    ours = ZooDataset(tiny_zoo, in_memory=False, split="all", epochs="all",
                      where={"layout": key})
    expected = ZooDataset(tiny_zoo, in_memory=True, split="all", epochs="all",
                          where={"layout": key})
    picked = [3, 0, 2, 1]
    items = ours.__getitems__(picked)
    assert all(same(item, expected[i]) for item, i in zip(items, picked))
    batch = default_collate(items)
    assert batch["weights"].data_ptr() == items[0]["weights"].data_ptr()  # no copy
    assert not items[0]["weights"].__dict__  # nothing hidden on what users may save
    stacked = torch.stack([expected[i]["weights"] for i in picked])
    assert torch.equal(batch["weights"], stacked)
    part = default_collate(items[:2])  # not the whole batch: stacked as usual
    assert part["weights"].data_ptr() != items[0]["weights"].data_ptr()
    assert torch.equal(part["weights"], stacked[:2])
    loader = DataLoader(ours, batch_size=3, num_workers=2, multiprocessing_context="fork")
    assert torch.equal(torch.cat([b["weights"] for b in loader]),
                       torch.stack([expected[i]["weights"] for i in range(len(expected))]))


def test_new_zoos_record_a_digest_per_row_group(tiny_zoo):
    manifest = read_manifest(tiny_zoo)
    assert manifest.format_version == FORMAT_VERSION == 7
    for shard in manifest.shards_of("models"):
        groups = pq.read_metadata(tiny_zoo / shard.path).num_row_groups
        assert len(shard.parts) == 1 + 2 * groups
        assert all(part.startswith("blake3:") for part in shard.parts)
        CheckedShard(tiny_zoo / shard.path, shard.parts).check(range(groups), weights=True)
    assert all(not s.parts for s in manifest.shards if s.format != "parquet"
               or s.table != "models")


def test_large_checkpoints_get_a_row_group_each(tmp_path, monkeypatch):
    monkeypatch.setattr(modelshards, "ROW_GROUP_BYTES", 1000)
    layout = Layout("w", "mlp", 1, {}, (Entry("w", (100,), "float32", 0, 100),))  # 400 B
    big = Layout("b", "mlp", 3, {}, (Entry("w", (300,), "float32", 0, 300),))  # 1200: alone
    for lay, per_group in ((layout, 2), (big, 1)):
        rows = [{"model_id": "m", "epoch": e, "layout": lay.key, "num_params": lay.size,
                 "weights": np.full(lay.size, e, np.float32)} for e in range(5)]
        shards, _ = modelshards.write_models(tmp_path / lay.key, "c", lay, rows, 5,
                                             cell_hdf5=False)
        metadata = pq.read_metadata(tmp_path / lay.key / shards[0].path)
        sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        assert sizes == ([2, 2, 1] if per_group == 2 else [1] * 5)
        assert len(shards[0].parts) == 1 + 2 * len(sizes)


def tamper(root: Path, shard_path: str, *, weights: bool) -> None:
    """Flip one byte inside row group 0's weights chunk (or its first other chunk)."""
    path = root / shard_path
    metadata = pq.read_metadata(path)
    columns, weights_span = chunk_spans(metadata, 0)
    start, length = weights_span if weights else columns[0]
    data = bytearray(path.read_bytes())
    data[start + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_tampered_row_is_refused_naming_the_file_before_its_values(tiny_zoo, tmp_path):
    root = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, root)
    shards = read_manifest(root).shards_of("models")
    path = root / shards[0].path
    metadata = pq.read_metadata(path)
    start, length = chunk_spans(metadata, 0)[1]
    data = bytearray(path.read_bytes())
    pieces = row_pieces(lambda pos, n: data[start + pos:start + pos + n], length,
                        metadata.row_group(0).num_rows)
    at, size = pieces[1]
    data[start + at + size // 2] ^= 0xFF  # inside row 1's weights: its page still parses
    path.write_bytes(bytes(data))
    ours = ZooDataset(root, in_memory=False, split="all", epochs="all")  # metadata: fine
    places = ours._places
    bad = [i for i in range(len(ours)) if places.shard[i] == 0 and places.row[i] == 1]
    whole = ZooDataset(tiny_zoo, in_memory=True, split="all", epochs="all")
    assert len(bad) == 1 and all(same(ours[i], whole[i]) for i in range(len(ours))
                                 if i not in bad)  # each other row checked alone, intact
    with pytest.raises(IntegrityError, match=rf"{shards[0].path}: row group 0, row 1 "
                                             r"\(weights\) does not match its digest"):
        ours[bad[0]]
    with pytest.raises(IntegrityError, match=rf"{shards[0].path}: row group 0, row 1 "):
        key = ours._store.keys[bad[0]]  # a batch of one layout: read into one tensor
        ours.__getitems__([i for i in range(len(ours)) if i != bad[0] and
                           ours._store.keys[i] == key][:2] + bad)
    stream = ZooStream(root, split="all", epochs="all", shuffle=False)
    with pytest.raises(IntegrityError, match=rf"{shards[0].path}: row group 0, row 1"):
        list(stream)
    with pytest.raises(IntegrityError, match=rf"{shards[0].path}: row group 0, row 1"):
        list(StreamLoader(stream, batch_size=4, collate_fn=pad_collate))
    with pytest.raises(IntegrityError, match=rf"{shards[0].path}: row group 0 \(weights\)"):
        ZooDataset(root, in_memory=True, split="all", epochs="all")  # read by row group
    shutil.copy(tiny_zoo / shards[0].path, root / shards[0].path)
    tamper(root, shards[1].path, weights=False)
    with pytest.raises(IntegrityError, match=rf"{shards[1].path}: row group 0 \(columns\)"):
        ZooDataset(root, in_memory=False)


def test_rows_are_read_alone_without_their_row_group(tiny_zoo, monkeypatch):
    ours = ZooDataset(tiny_zoo, in_memory=False, split="all", epochs="all", cache_bytes=0)
    whole = ZooDataset(tiny_zoo, in_memory=True, split="all", epochs="all")
    assert all(str(d).startswith("blake3:") for d in ours._places.sha256)
    monkeypatch.setattr(CheckedShard, "read_weights", None)  # no row group is read whole
    monkeypatch.setattr(CheckedShard, "read_group", None)
    assert all(same(ours[i], whole[i]) for i in range(len(ours)))


def test_a_row_digest_that_lies_is_caught_by_readers_and_verify(tiny_zoo, tmp_path):
    """A shard re-signed in the manifest (a writer's bug) whose row 0 names another digest."""
    import dataclasses

    from analysis.verify import verify
    from zoo.folder.manifest import write_manifest
    from zoo.folder.modelshards import parquet_options
    from zoo.folder.names import sha256_of
    from zoo.folder.rowgroups import shard_parts

    root = shutil.copytree(tiny_zoo, tmp_path / "zoo")
    manifest = read_manifest(root)
    shard = manifest.shards_of("models")[0]
    path = root / shard.path
    table = pq.read_table(path)
    groups = [pq.ParquetFile(path).metadata.row_group(g).num_rows
              for g in range(pq.ParquetFile(path).metadata.num_row_groups)]
    digests = table.column("weights_sha256").to_pylist()
    digests[0] = "blake3:" + "0" * 64
    table = table.set_column(table.schema.get_field_index("weights_sha256"),
                             table.schema.field("weights_sha256"), pa.array(digests))
    pq.write_table(table, path, row_group_size=groups[0], **parquet_options(table.schema))
    assert pq.read_metadata(path).row_group(0).num_rows == groups[0]
    resigned = dataclasses.replace(shard, bytes=path.stat().st_size, sha256=sha256_of(path),
                                   parts=shard_parts(path))
    write_manifest(root, dataclasses.replace(manifest, shards=tuple(
        resigned if s == shard else s for s in manifest.shards)))
    ours = ZooDataset(root, in_memory=False, split="all", epochs="all")
    first = next(i for i in range(len(ours)) if ours._places.shard[i] == 0
                 and ours._places.row[i] == 0)
    with pytest.raises(IntegrityError, match=rf"{shard.path}: row group 0, row 0 \(weights\)"):
        ours[first]
    problems = verify(root, deep=True)
    assert len(problems) == 1 and "row 0" in problems[0] and \
        "weights do not match weights_sha256" in problems[0]


def test_row_groups_decode_from_the_checked_bytes_only(tiny_zoo):
    shard = read_manifest(tiny_zoo).shards_of("models")[0]
    path = tiny_zoo / shard.path
    checked = CheckedShard(path, shard.parts)
    ours = checked.read_group(0, ["weights", "epoch"])
    assert ours.equals(pq.ParquetFile(path).read_row_group(0, columns=["weights", "epoch"]))
    with open(path, "rb") as handle:  # Arrow's image of the file: the checked chunk, zeros
        image = checked._image(handle.fileno(), 0)
        checked._read_checked(handle.fileno(), 0, image, weights=True)
        data = handle.read()
    start, length = checked.spans(0)[1]
    assert bytes(image[start:start + length]) == data[start:start + length]
    assert not image[:start].any() and not image[start + length:].any()


def test_a_tampered_footer_is_refused_before_it_is_parsed(tiny_zoo, tmp_path):
    root = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, root)
    shard = read_manifest(root).shards_of("models")[0]
    path = root / shard.path
    data = bytearray(path.read_bytes())
    data[-12] ^= 0xFF  # inside the footer
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{shard.path}: footer does not match"):
        ZooReader(root).parquet_metadata(shard)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_older_format_zoos_load_in_memory_and_lazily(version):
    folder = FIXTURES / f"zoo-format{version}"
    body = json.loads((folder / "manifest.json").read_text())
    assert body["format_version"] == version
    assert any("parts" in s for s in body["shards"]) == (version >= 4)
    whole = ZooDataset(folder, in_memory=True, split="all", epochs="all",
                       representation="state_dict")
    ours = ZooDataset(folder, in_memory=False, split="all", epochs="all",
                      representation="state_dict")
    assert len(ours) == 12 and ours.lazy
    assert not np.all(ours._places.file == None)  # noqa: E711 (per-model HDF5 rows too)
    assert all(same(ours[i], whole[i]) for i in range(12))
    assert ours.load_model(3).state_dict().keys() == whole[3]["weights"].keys()


@pytest.mark.parametrize("version", [3, 4])
def test_older_format_weights_read_as_this_format_bytes(version):
    folder = FIXTURES / f"zoo-format{version}"
    reader = ZooReader(folder)
    for shard in reader.manifest.shards_of("models"):
        lists = pq.read_table(folder / shard.path, columns=["weights"]).column("weights")
        assert str(lists.type) == "list<element: float>"
        table = reader.parquet(shard, ["weights"], reader_schema())
        assert str(table.column("weights").type) == "large_binary"
        assert [np.frombuffer(b, "<f4").tolist() for b in table.column("weights").to_pylist()] \
            == lists.to_pylist()


def reader_schema():
    from zoo.folder.schema import arrow_schema

    return arrow_schema("models")


def test_generating_into_an_older_format_zoo_is_refused_in_one_line(tmp_path):
    from zoo.errors import ZooFolderError
    from zoo.folder.record import read_record
    from zoo.folder.writer import ZooWriter

    root = tmp_path / "zoo"
    shutil.copytree(FIXTURES / "zoo-format4", root)
    before = (root / "manifest.json").read_text()
    record = read_record(root)
    with pytest.raises(ZooFolderError, match=rf"{root}: a format-4 zoo; this version writes "
                                             rf"format-7 models shards"):
        ZooWriter(root, record.spec_hash).start(record)
    assert (root / "manifest.json").read_text() == before


def test_plain_weight_pages_are_read_in_place_as_arrow_decodes_them(tmp_path):
    from zoo.folder.modelshards import inline_weights, parquet_options
    from zoo.folder.plainpages import plain_rows
    from zoo.folder.schema import float32_bytes

    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(size, np.float32) for size in (150_000, 0, 3, 400_000, 7)]
    table = pa.table({"weights": float32_bytes(rows)})  # rows spread over several pages
    pq.write_table(table, tmp_path / "w.parquet", **parquet_options(table.schema))
    metadata = pq.read_metadata(tmp_path / "w.parquet")
    start, length = chunk_spans(metadata, 0)[1]
    chunk = (tmp_path / "w.parquet").read_bytes()[start:start + length]
    values, offsets = plain_rows(chunk, len(rows))
    expected = inline_weights(pq.read_table(tmp_path / "w.parquet"))
    assert np.array_equal(values, expected[0]) and np.array_equal(offsets, expected[1])
    assert offsets.tolist() == np.cumsum([0] + [len(r) for r in rows]).tolist()
    assert plain_rows(chunk, len(rows) + 1) is None  # another row count: Arrow decodes
    assert plain_rows(chunk[:-3], len(rows)) is None  # a cut page
    zstd = tmp_path / "z.parquet"
    pq.write_table(table, zstd, compression="zstd")
    start, length = chunk_spans(pq.read_metadata(zstd), 0)[1]
    assert plain_rows(zstd.read_bytes()[start:start + length], len(rows)) is None


def test_rows_located_from_their_sizes_read_a_page_header_not_every_length(tmp_path):
    from zoo.folder.modelshards import parquet_options
    from zoo.folder.schema import float32_bytes

    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(size, np.float32) for size in (150_000, 0, 3, 400_000, 7)]
    table = pa.table({"weights": float32_bytes(rows)})  # rows spread over several pages
    pq.write_table(table, tmp_path / "w.parquet", **parquet_options(table.schema))
    start, length = chunk_spans(pq.read_metadata(tmp_path / "w.parquet"), 0)[1]
    chunk = (tmp_path / "w.parquet").read_bytes()[start:start + length]
    reads = []

    def read(pos, count):
        reads.append(pos)
        return chunk[pos:pos + count]

    found = row_pieces(read, length, len(rows))
    assert [chunk[a:a + n] for a, n in found] == [r.tobytes() for r in rows]
    by_word = len(reads)
    reads.clear()
    sizes = [4 * len(r) for r in rows]
    assert row_pieces(read, length, len(rows), lengths=sizes) == found
    assert len(reads) < by_word - len(rows) + 1  # no value length read
    for wrong in ([*sizes[:2], 8, *sizes[3:]], sizes[:-1], [*sizes, 4]):
        assert row_pieces(read, length, len(rows), lengths=wrong) is None
