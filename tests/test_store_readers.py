"""Readers of a zoo on an object store (a real S3 server, moto on loopback): ZooDataset,
load_model, `zoo info`, `zoo verify`, `zoo plot`, the studies and datasets.load_dataset,
through a bounded local cache with the integrity and confinement rules of a local folder."""

from __future__ import annotations

import pytest
import torch

from generators.cli import main
from loaders import ZooDataset, load_model
from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.cache import CACHE_ENV
from zoo.folder.location import open_location
from zoo.folder.manifest import read_manifest
from zoo.folder.reader import ZooReader
from zoo.folder.sync import sync


@pytest.fixture(scope="module")
def stored(tiny_zoo, s3_store) -> str:
    """The tiny zoo copied to the store once for this module."""
    url = s3_store.url("readers")
    sync(tiny_zoo, url)
    return url


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def same_item(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


@pytest.mark.parametrize("in_memory", [True, False])
def test_zoo_dataset_from_the_store_serves_the_local_items(stored, tiny_zoo, in_memory):
    remote, local = (ZooDataset(root, split="all", epochs="all", targets=["test_accuracy"],
                                in_memory=in_memory) for root in (stored, tiny_zoo))
    assert len(remote) == len(local) > 0 and repr(remote).startswith(f"ZooDataset({stored!r}")
    assert all(same_item(remote[i], local[i]) for i in range(len(local)))


def test_a_stream_of_the_store_yields_the_local_items_in_the_same_order(stored, tiny_zoo):
    from loaders import ZooStream

    remote, local = (list(ZooStream(root, seed=3, split="all", epochs="all"))
                     for root in (stored, tiny_zoo))
    assert len(remote) == len(local) > 0
    assert all(same_item(a, b) for a, b in zip(remote, local))


def test_load_model_from_the_store_holds_the_local_weights(stored, tiny_zoo):
    table = ZooReader(tiny_zoo).table("models", columns=["model_id", "epoch"])
    model_id, epoch = table.column("model_id")[0].as_py(), table.column("epoch")[0].as_py()
    remote, local = load_model(stored, model_id, epoch), load_model(tiny_zoo, model_id, epoch)
    for (name, a), (_, b) in zip(remote.state_dict().items(), local.state_dict().items()):
        assert torch.equal(a, b), name


def test_zoo_info_and_verify_read_the_store(stored, capsys):
    assert main(["info", stored]) == 0
    assert f"in {stored}" in capsys.readouterr().out
    assert main(["verify", stored, "--deep"]) == 0
    assert "hold" in capsys.readouterr().out


def test_the_cache_stays_within_its_bound_and_serves_the_same_rows(stored, tiny_zoo, cache):
    shards = read_manifest(tiny_zoo).shards
    bound = 2 * max(s.bytes for s in shards)
    reader = ZooReader(stored, cache_bytes=bound)
    for shard in shards:
        assert reader.path(shard).read_bytes() == (tiny_zoo / shard.path).read_bytes()
        assert sum(reader.cache.shards_held().values()) <= bound
    same = ZooReader(tiny_zoo).table("models")  # repr: NaN metrics compare equal
    assert repr(reader.table("models").to_pylist()) == repr(same.to_pylist())
    assert len(reader.cache.shards_held()) < len(shards)  # some were evicted


def test_a_tampered_object_in_the_store_is_refused_naming_it(tiny_zoo, s3_store):
    url = s3_store.url("tampered-reader")
    sync(tiny_zoo, url)
    shard = read_manifest(tiny_zoo).shards_of("models")[0]
    data = bytearray((tiny_zoo / shard.path).read_bytes())
    data[len(data) // 2] ^= 1
    open_location(url).write_bytes(shard.path, bytes(data))
    with pytest.raises(IntegrityError, match=f"{url}/{shard.path}: sha256 does not match"):
        ZooDataset(url, split="all")


def test_a_file_the_manifest_does_not_list_is_never_fetched(stored):
    reader = ZooReader(stored)
    shard = reader.manifest.shards_of("models")[0]
    with pytest.raises(ZooFolderError, match="is not a checkpoints shard"):
        reader.weights_source(shard, "hdf5/models/other.h5")
    assert not (reader.root / "hdf5/models/other.h5").exists()


def test_load_dataset_reads_the_store_with_storage_options(stored, tiny_zoo, s3_store, tmp_path,
                                                          monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # reach the loopback store

    from loaders.hf import hf_data_files, load_hf_dataset

    files = hf_data_files(stored)
    assert all(f.startswith(f"{stored}/data/models/") for split in files.values() for f in split)
    options = {"endpoint_url": s3_store.endpoint, "key": "testing", "secret": "testing"}
    remote = load_hf_dataset(stored, storage_options=options, split="train",
                             cache_dir=str(tmp_path / "hf"))
    local = datasets.load_dataset(str(tiny_zoo), split="train", cache_dir=str(tmp_path / "hf2"))
    assert remote.num_rows == local.num_rows > 0
    columns = ["model_id", "epoch", "test_loss"]
    assert remote.select_columns(columns).to_list() == local.select_columns(columns).to_list()
    streamed = load_hf_dataset(stored, config="cells", storage_options=options, split="train",
                               streaming=True)
    assert len(list(streamed)) == len(datasets.load_dataset(
        str(tiny_zoo), "cells", split="train", cache_dir=str(tmp_path / "hf3")))


def test_zoo_plot_of_a_store_zoo_writes_the_local_figures_into_its_plots_prefix(
        stored, tiny_zoo, s3_store, tmp_path, capsys):
    from analysis.plots import plot_zoo

    local = plot_zoo(tiny_zoo, tmp_path / "local")
    assert main(["plot", stored]) == 0
    printed = capsys.readouterr().out.split()
    store = open_location(stored)
    for path in local:
        assert f"{stored}/plots/{path.name}" in printed
        assert store.read_bytes(f"plots/{path.name}", "figure", 1 << 24) == path.read_bytes()
    assert main(["plot", stored, "--out", str(tmp_path / "figures")]) == 0
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == \
        sorted(p.name for p in local)
    sync(stored, s3_store.url("readers-copy"))
    assert "plots/" not in " ".join(s3_store.keys("readers-copy"))  # sync copies the zoo only


def test_a_study_of_a_store_zoo_writes_the_local_table_into_its_studies_prefix(
        stored, tiny_zoo, tmp_path):
    import pyarrow.parquet as pq

    from analysis.studies import run_study

    remote = run_study("prune", stored, show_progress=False, densities=[1.0, 0.5])
    assert remote == [f"{stored}/studies/prune/prune.parquet", f"{stored}/studies/prune/prune.png"]
    local = run_study("prune", tiny_zoo, tmp_path, show_progress=False, densities=[1.0, 0.5])
    open_location(stored).get("studies/prune/prune.parquet", tmp_path / "remote.parquet")
    assert repr(pq.read_table(tmp_path / "remote.parquet").to_pylist()) == \
        repr(pq.read_table(local[0]).to_pylist())  # repr: NaN metrics compare equal


@pytest.mark.parametrize("document, garbled", [("zoo.json", False), ("README.md", False),
                                               ("zoo.json", True), ("README.md", True)])
def test_verify_of_a_tampered_document_on_the_store_fails_as_on_a_folder(
        document, garbled, zoo, s3_store, capsys):
    """A changed zoo.json or README.md (edited, or not even JSON/YAML) gets the same exit code
    and the same problems from `zoo verify` in a folder and on a store (there naming URIs)."""
    url = s3_store.url(f"tampered-{document}-{garbled}")
    sync(zoo, url)
    data = b"{not: [json" if garbled else (zoo / document).read_bytes().replace(b"tiny", b"tinY")
    (zoo / document).write_bytes(data)
    open_location(url).write_bytes(document, data)
    local_code = main(["verify", str(zoo)])
    local = capsys.readouterr().err.replace(str(zoo), "ZOO")
    remote_code = main(["verify", url])
    remote = capsys.readouterr().err.replace(url, "ZOO")
    assert (remote_code, remote) == (local_code, local)
    if not garbled:
        assert local_code == 1 and local.startswith(f"problem: ZOO/{document}: sha256 does not "
                                                    f"match the manifest")
