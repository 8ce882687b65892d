"""Models files of bounded bytes (format 6): a cell's rows span several numbered shards, each
within the bound unless one row alone is larger; every reader, verify, resume, relabel and
prune see the same rows as with one shard a cell; format-5 zoos load and grow as this format."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from analysis.verify import verify
from generators.generate import generate
from generators.relabel import relabel
from loaders import StreamLoader, ZooDataset, ZooStream, pad_collate
from loaders.models import load_model
from tests.conftest import TINY_SPEC, write_spec
from tests.test_lazy_loading import FIXTURES, same, tamper
from zoo.errors import ZooError, ZooFolderError
from zoo.folder import modelshards
from zoo.folder.manifest import read_manifest, write_manifest
from zoo.folder.names import FORMAT_VERSION
from zoo.folder.reader import ZooReader
from zoo.layout import Entry, Layout
from zoo.specfile import load_spec

BOUND = 26_000  # bytes: two or three rows of the tiny zoo's in each models file


@pytest.fixture(scope="module")
def sharded_zoo(tmp_path_factory, tiny_zoo) -> Path:
    """The session's tiny zoo generated again with a tiny shard bound (read-only)."""
    folder = tmp_path_factory.mktemp("sharded")
    generate(load_spec(write_spec(folder)), folder / "zoo", progress=False, shard_bytes=BOUND)
    return folder / "zoo"


def models_shards(root: Path) -> dict[str, list]:
    """Each cell's models shards of each format, in manifest order."""
    out: dict[str, list] = {}
    for shard in read_manifest(root).shards:
        if shard.table == "models":
            out.setdefault(f"{shard.cell_id} {shard.format}", []).append(shard)
    return out


def weights_by_key(root: Path) -> dict[tuple[str, int], bytes]:
    """(model_id, epoch) -> the row's float32 bytes, read through ZooDataset."""
    dataset = ZooDataset(root, split="all", epochs="all", in_memory=True)
    return {(dataset[i]["model_id"], dataset[i]["epoch"]): dataset[i]["weights"].numpy().tobytes()
            for i in range(len(dataset))}


def test_every_models_file_stays_within_the_bound_and_cells_span_several(sharded_zoo):
    manifest = read_manifest(sharded_zoo)
    assert manifest.format_version == FORMAT_VERSION == 7
    cells = models_shards(sharded_zoo)
    parquet = [shards for key, shards in cells.items() if key.endswith("parquet")]
    assert len(parquet) == 4 and all(len(shards) >= 3 for shards in parquet)
    for key, shards in cells.items():
        assert [int(s.path.rsplit("-", 1)[1].split(".")[0]) for s in shards] == \
            list(range(len(shards)))  # numbered in row order
        assert all((sharded_zoo / s.path).stat().st_size == s.bytes <= BOUND for s in shards)
    assert sum(s.rows for s in manifest.shards_of("models")) == 24
    assert [len(v) for k, v in sorted(cells.items()) if k.endswith("hdf5")] == \
        [len(v) for k, v in sorted(cells.items()) if k.endswith("parquet")]  # a twin each


def test_rows_larger_than_the_bound_get_a_file_each_and_the_same_rows_the_same_files(tmp_path):
    layout = Layout("w", "mlp", 1, {}, (Entry("w", (400,), "float32", 0, 400),))
    rows = [{"model_id": f"m{i // 3}", "epoch": i % 3, "layout": layout.key, "cell_id": "c",
             "num_params": layout.size, "weights": np.full(layout.size, i, np.float32)}
            for i in range(9)]
    alone, _ = modelshards.write_models(tmp_path / "a", "c", layout, rows, 9, cell_hdf5=False,
                                        shard_bytes=1)
    assert [s.rows for s in alone] == [1] * 9
    files, _ = modelshards.write_models(tmp_path / "b", "c", layout, rows, 9, cell_hdf5=False,
                                        inline_bytes=100, shard_bytes=31_000)
    checkpoints = [s for s in files if s.format == "checkpoints"]
    assert [s.rows for s in checkpoints] == [2, 1] * 3  # each model's epochs over two files
    assert all(s.bytes <= 31_000 for s in files)
    table = pq.read_table(tmp_path / "b" / files[-1].path)
    assert table.column("weights_file").to_pylist()[:3] == [checkpoints[0].path] * 2 + \
        [checkpoints[1].path]
    assert table.column("weights_index").to_pylist()[:3] == [0, 1, 0]
    again, _ = modelshards.write_models(tmp_path / "c", "c", layout, rows, 9, cell_hdf5=False,
                                        shard_bytes=30_000)
    twice, _ = modelshards.write_models(tmp_path / "d", "c", layout, rows, 9, cell_hdf5=False,
                                        shard_bytes=30_000)
    assert len(again) > 1 and [s.sha256 for s in again] == [s.sha256 for s in twice]
    with pytest.raises(ValueError, match="shard_bytes: 0 is not allowed"):
        modelshards.ModelsWriter(tmp_path, "c", layout, 1, cell_hdf5=False, shard_bytes=0)
    with pytest.raises(ZooFolderError, match="x: more than 100000 shards"):
        modelshards.numbered("x", 100_000)
    with pytest.raises(ZooError, match="--shard-bytes: True is not allowed"):
        generate(load_spec(write_spec(tmp_path)), tmp_path / "zoo", shard_bytes=True)
    assert not (tmp_path / "zoo").exists()  # refused before any work


def test_every_reader_serves_the_rows_of_one_shard_a_cell(sharded_zoo, tiny_zoo):
    expected = weights_by_key(tiny_zoo)
    assert weights_by_key(sharded_zoo) == expected
    options = dict(split="all", epochs="all", representation="state_dict")
    lazy = ZooDataset(sharded_zoo, in_memory=False, cache_bytes=4096, **options)
    whole = ZooDataset(tiny_zoo, in_memory=True, **options)
    order = {(whole[i]["model_id"], whole[i]["epoch"]): i for i in range(len(whole))}
    assert lazy.lazy and len(lazy) == len(whole) == 24
    assert all(same(lazy[i], whole[order[lazy[i]["model_id"], lazy[i]["epoch"]]])
               for i in range(len(lazy)))
    model_id, epoch = next(iter(order))
    assert same(load_model(sharded_zoo, model_id, epoch).state_dict(),
                load_model(tiny_zoo, model_id, epoch).state_dict())
    seen = Counter()
    for rank in range(2):
        stream = ZooStream(sharded_zoo, split="all", epochs="all", rank=rank, world_size=2,
                           seed=3, buffer_size=3)
        for batch in StreamLoader(stream, batch_size=4, num_workers=2, collate_fn=pad_collate):
            masks = batch.get("mask", torch.ones_like(batch["weights"], dtype=torch.bool))
            for m, e, w, mask in zip(batch["model_id"], batch["epoch"], batch["weights"], masks):
                seen[m, int(e)] += 1
                assert w[mask].numpy().tobytes() == expected[m, int(e)]
    assert seen == Counter(list(expected))


@pytest.mark.parametrize("streaming", [False, True])
def test_load_dataset_reads_every_shard(sharded_zoo, tiny_zoo, tmp_path, streaming):
    import datasets

    def rows(root):
        loaded = datasets.load_dataset(str(root), split="train+validation+test",
                                       streaming=streaming, cache_dir=str(tmp_path / root.name))
        return {(r["model_id"], r["epoch"]): r["weights"] for r in loaded}

    assert rows(sharded_zoo) == rows(tiny_zoo) and len(rows(sharded_zoo)) == 24


def test_verify_holds_and_names_a_tampered_second_shard(sharded_zoo, tmp_path):
    root = shutil.copytree(sharded_zoo, tmp_path / "zoo")
    assert verify(root, deep=True) == []
    second = next(v for k, v in models_shards(root).items() if k.endswith("parquet"))[1]
    tamper(root, second.path, weights=True)
    problems = verify(root, deep=True)
    assert problems and all(second.path in p for p in problems)


def test_a_run_killed_before_a_cell_committed_redoes_that_cell_to_the_same_files(sharded_zoo,
                                                                                tmp_path):
    root = shutil.copytree(sharded_zoo, tmp_path / "zoo")
    manifest = read_manifest(root)
    lost = sorted(manifest.cell_ids())[1]
    kept = [s for s in manifest.shards if s.cell_id != lost]
    write_manifest(root, dataclasses.replace(manifest, shards=tuple(kept)))  # its files stay
    (root / "data" / "models" / f"cell-{lost}_0000000-00002.parquet.partial").write_bytes(b"x")
    spec = load_spec(write_spec(tmp_path))
    result = generate(spec, root, progress=False, shard_bytes=BOUND)
    assert result.committed == 1  # only the cell the manifest lacked
    assert not list(root.rglob("*.partial"))
    assert weights_by_key(root) == weights_by_key(sharded_zoo)
    before, after = models_shards(sharded_zoo), models_shards(root)
    assert {k: [s.rows for s in v] for k, v in after.items()} == \
        {k: [s.rows for s in v] for k, v in before.items()}
    twins = f"{lost} hdf5"  # no timings in them: the same bytes
    assert [s.sha256 for s in after[twins]] == [s.sha256 for s in before[twins]]
    on_disk = {p.relative_to(root).as_posix() for p in (root / "data" / "models").iterdir()}
    assert on_disk == {s.path for s in read_manifest(root).shards_of("models")}
    assert verify(root) == []


def test_relabel_replaces_each_shard_and_prune_counts_each_model_once(sharded_zoo, tmp_path):
    root = shutil.copytree(sharded_zoo, tmp_path / "zoo")
    before = models_shards(root)
    result = relabel(root, {"mc": 50.0})
    after = models_shards(root)
    assert {k: [s.rows for s in v] for k, v in after.items()} == \
        {k: [s.rows for s in v] for k, v in before.items()}
    assert all("relabel-" in s.path for k, v in after.items() if k.endswith("parquet")
               for s in v)
    labels = {r["cell_id"]: r["phase"] for r in result.after}
    models = ZooReader(root).table("models", columns=["cell_id", "phase"]).to_pydict()
    assert models["phase"] == [labels[c] for c in models["cell_id"]]
    for shard in ZooReader(root).manifest.shards_of("models"):  # row groups kept bounded
        assert pq.read_metadata(root / shard.path).num_row_groups == 1
    assert weights_by_key(root) == weights_by_key(sharded_zoo)
    assert verify(root, deep=True) == []
    smaller = dict(TINY_SPEC, grid={**TINY_SPEC["grid"],
                                    "load": {"axis": "width", "values": [4]}})
    (tmp_path / "smaller.yaml").write_text(yaml.safe_dump(smaller))
    pruned = generate(load_spec(tmp_path / "smaller.yaml"), root, progress=False, prune=True,
                      shard_bytes=BOUND)
    assert (pruned.plan.shrink.models, pruned.plan.shrink.rows) == (4, 12)
    assert len(ZooReader(root).table("models")) == 12 and verify(root) == []


def test_a_format5_zoo_loads_and_grows_as_this_format(tmp_path):
    root = shutil.copytree(FIXTURES / "zoo-format5", tmp_path / "zoo")
    old = read_manifest(root)
    assert old.format_version == 5
    assert len(ZooDataset(root, split="all", epochs="all", in_memory=False)) == 12
    spec = json.loads((root / "zoo.json").read_text())["spec"]
    body = dict(TINY_SPEC, name="format5",
                grid={**TINY_SPEC["grid"], "temperature": {"axis": "batch_size",
                                                           "values": [256, 512]}})
    assert spec["temperature_axis"]["values"] == [256]
    (tmp_path / "grown.yaml").write_text(yaml.safe_dump(body))
    result = generate(load_spec(tmp_path / "grown.yaml"), root, progress=False,
                      inline_bytes=1000, shard_bytes=BOUND)
    assert result.committed == 2
    grown = read_manifest(root)
    assert grown.format_version == FORMAT_VERSION
    assert set(old.shards_of("models")) <= set(grown.shards_of("models"))  # kept as they are
    for shard in old.shards:
        assert hashlib.sha256((root / shard.path).read_bytes()).hexdigest() == shard.sha256
    new = [s for s in grown.shards if s.table == "models" and s not in old.shards]
    assert new and all(s.path.rsplit(".", 1)[0][-6:-5] == "-" for s in new)  # numbered
    lazy = ZooDataset(root, split="all", epochs="all", in_memory=False)
    whole = ZooDataset(root, split="all", epochs="all", in_memory=True)
    inline = lazy._places.file == None  # noqa: E711
    alone = np.array([str(d).startswith("blake3:") for d in lazy._places.sha256])
    assert 0 < alone.sum() < inline.sum() and not (alone & ~inline).any()  # new inline rows
    assert len(lazy) == 24  # are read alone, old ones by row group
    assert all(torch.equal(lazy[i]["weights"], whole[i]["weights"]) for i in range(24))
    assert verify(root) == []
