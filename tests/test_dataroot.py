"""A folder data set whose data.root is a URI (a real S3 server, moto on loopback): fetched into a
local cache bounded in bytes, then loaded as the local folder would be."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.synthetic_cifar import write_synthetic
from generators.executor import WorkerData
from zoo import dataroot, datasets
from zoo.errors import DataError
from zoo.folder.location import open_location
from zoo.specfile import load_spec


def upload(folder: Path, url: str) -> dict[str, int]:
    """Every file under `folder` stored under the prefix `url`; relative name -> bytes."""
    store = open_location(url)
    files = {path.relative_to(folder).as_posix(): path for path in folder.rglob("*")
             if path.is_file()}
    for relative, path in files.items():
        store.put(path, relative)
    return {relative: path.stat().st_size for relative, path in files.items()}


@pytest.fixture
def cifar(tmp_path, s3_store, request) -> tuple[Path, str]:
    """Tiny synthetic CIFAR-10 files locally and under a prefix of the store of this test's own."""
    write_synthetic(tmp_path / "local", "cifar10", train=50, test=20)
    url = s3_store.url(f"data/{request.node.name}")
    upload(tmp_path / "local", url)
    return tmp_path / "local", url


def test_a_uri_root_loads_the_same_tensors_as_the_local_folder(cifar):
    local, url = cifar
    remote = dataroot.load("cifar10", root=url)
    assert remote.fingerprint() == datasets.load("cifar10", root=str(local)).fingerprint()
    cached = dataroot.local_root(url)
    batch = cached / "cifar-10-batches-bin" / "test_batch.bin"
    before = batch.stat().st_mtime_ns
    assert dataroot.load("cifar10", root=url + "/").fingerprint() == remote.fingerprint()
    assert batch.stat().st_mtime_ns == before  # unchanged objects are not fetched again


def test_an_object_changed_in_the_store_is_fetched_again(cifar, tmp_path):
    _, url = cifar
    first = dataroot.load("cifar10", root=url).fingerprint()
    write_synthetic(tmp_path / "other", "cifar10", train=50, test=20, seed=1)
    upload(tmp_path / "other", url)
    again = dataroot.load("cifar10", root=url).fingerprint()
    assert again != first
    assert again == datasets.load("cifar10", root=str(tmp_path / "other")).fingerprint()


def test_a_worker_loads_a_uri_root_and_checks_the_drivers_fingerprint(cifar):
    local, url = cifar
    spec = load_spec("resnet18-cifar10", data_root=url)
    fingerprint = datasets.load("cifar10", root=str(local)).fingerprint()
    assert WorkerData(None, fingerprint, cwd="/nowhere").load(spec).fingerprint() == fingerprint
    with pytest.raises(DataError, match=rf"{url}: data set 'cifar10' on this worker has "):
        WorkerData(None, "0" * 64).load(spec)


def test_an_empty_prefix_is_refused_in_one_line(s3_store):
    url = s3_store.url("data/absent")
    with pytest.raises(DataError, match=rf"^data.root {url}: no objects under this prefix; "
                                        r"upload the data set's files there") as refused:
        load_spec("resnet18-cifar10", data_root=url)
    assert "\n" not in str(refused.value)


def test_a_missing_file_is_named_by_its_uri(cifar):
    _, url = cifar
    open_location(url).delete("cifar-10-batches-bin/test_batch.bin")
    with pytest.raises(DataError, match=rf"^cifar10: {url}/cifar-10-batches-bin/test_batch.bin "
                                        r"not found; download the CIFAR-10 binary version"):
        dataroot.load("cifar10", root=url)


def test_the_cache_stays_within_its_bound(tmp_path, s3_store):
    sizes = {}
    for name in ("first", "second"):
        write_synthetic(tmp_path / name, "cifar10", train=50, test=20)
        sizes[name] = sum(upload(tmp_path / name, s3_store.url(f"bound/{name}")).values())
    home, bound = tmp_path / "cache", sizes["first"] + sizes["second"] // 2
    first = dataroot.local_root(s3_store.url("bound/first"), bound, home)
    second = dataroot.local_root(s3_store.url("bound/second"), bound, home)
    assert second.is_dir() and not first.exists()  # the least recently used one made room
    held = sum(p.stat().st_size for p in (home / "data").rglob("*") if p.is_file())
    assert sizes["second"] <= held <= bound
    with pytest.raises(DataError, match=rf"bound/first: {sizes['first']} bytes, more than the "
                                        rf"cache holds \({sizes['first'] - 1}; set "
                                        r"PHASE_ZOO_CACHE_BYTES\)"):
        dataroot.local_root(s3_store.url("bound/first"), sizes["first"] - 1, home)
