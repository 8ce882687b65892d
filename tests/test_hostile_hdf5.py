"""Hostile HDF5 files: per-model checkpoint files and cell HDF5 shards that point outside the
folder (external links, virtual datasets, external storage), use what the writers never use
(soft links, filters, other dtypes, extra objects, huge chunks) or name a checkpoint other
than their row's (an index out of range, another epoch). Every case is refused naming the
file and the object; the outside file is never read (its access time is the canary: HDF5
opens files itself, unseen by Python's audit hooks) and memory stays bounded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loaders import ZooDataset, load_model
from tests.conftest import write_spec
from tests.test_hostile_folders import hdf5_shard, models_shard, no_hang, reseal, verify_outcome
from tests.test_hostile_sizes import peak_of_reading
from zoo.errors import ZooFolderError
from zoo.folder.writer import write_parquet

__all__ = ["no_hang"]  # a fixture, used by name


@pytest.fixture(scope="module")
def file_zoo(tmp_path_factory, ray_runtime) -> Path:
    """The tiny zoo with every checkpoint in a per-model HDF5 file (inline_bytes=1)."""
    from generators.generate import generate
    from zoo.specfile import load_spec

    folder = tmp_path_factory.mktemp("filezoo")
    out = folder / "zoo"
    result = generate(load_spec(write_spec(folder)), out, progress=False, inline_bytes=1)
    assert not result.failures
    return out


@pytest.fixture
def zoo(file_zoo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "zoo"
    shutil.copytree(file_zoo, copy)
    return copy


@pytest.fixture
def cell_zoo(tiny_zoo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, copy)
    return copy


class Canary:
    """A file outside the zoo whose access time says whether anything read it (the folder's
    mount updates access times older than the file's modification, as relatime does)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        probe = path.with_name("probe")
        probe.write_bytes(b"x")
        self._age(probe)
        probe.read_bytes()
        self.works = os.stat(probe).st_atime > os.stat(probe).st_mtime - 50
        self._age(path)

    @staticmethod
    def _age(path: Path) -> None:
        status = os.stat(path)
        os.utime(path, (status.st_mtime - 100, status.st_mtime))

    def untouched(self) -> bool:
        status = os.stat(self.path)
        return not self.works or status.st_atime < status.st_mtime - 50


def first_file_row(root: Path) -> dict:
    return pq.read_table(models_shard(root)).slice(0, 1).to_pylist()[0]


def outside_twin(root: Path, outside: Path, name: str) -> tuple[Path, Canary]:
    """outside/evil.h5 holding /data shaped as dataset `name` of the first row's file, 7.0s."""
    with h5py.File(root / first_file_row(root)["weights_file"], "r") as handle:
        shape = handle[name].shape
    evil = outside / "evil.h5"
    with h5py.File(evil, "w") as handle:
        handle["data"] = np.full(shape, 7.0, np.float32)
    return evil, Canary(evil)


def rewrite(path: Path, name: str, make: Callable[[h5py.File, tuple], None]) -> None:
    """Replace dataset `name` of the HDF5 file `path` by what `make(handle, shape)` makes."""
    with h5py.File(path, "r+") as handle:
        shape = handle[name].shape
        del handle[name]
        make(handle, shape)


def checkpoint_file(root: Path) -> Path:
    return root / first_file_row(root)["weights_file"]


WEIGHT = "weights/1.weight"  # the first layer of the tiny MLP: (epochs, 4, 40) or (epochs, 8, 40)


def _external_link(file: Path, evil: Path) -> None:
    rewrite(file, WEIGHT, lambda h, s: h.__setitem__(WEIGHT, h5py.ExternalLink(str(evil), "/data")))


def _virtual(file: Path, evil: Path) -> None:
    def make(handle: h5py.File, shape: tuple) -> None:
        layout = h5py.VirtualLayout(shape=shape, dtype=np.float32)
        layout[...] = h5py.VirtualSource(str(evil), "data", shape=shape)
        handle.create_virtual_dataset(WEIGHT, layout)
    rewrite(file, WEIGHT, make)


def _external_storage(file: Path, evil: Path) -> None:
    def make(handle: h5py.File, shape: tuple) -> None:
        handle.create_dataset(WEIGHT, shape=shape, dtype=np.float32,
                              external=[(str(evil), 0, h5py.h5f.UNLIMITED)])
    rewrite(file, WEIGHT, make)


# (id, tamper of one HDF5 file given the outside file, message): refused, outside unread
OUTSIDE_CASES = [
    ("external-link", _external_link, "/weights/1.weight is an external link"),
    ("virtual-dataset", _virtual, "/weights/1.weight is a virtual dataset"),
    ("external-storage", _external_storage, "/weights/1.weight keeps its values in external"),
]

READERS: dict[str, Callable[[Path], object]] = {
    "dataset": lambda root: ZooDataset(root, split="all", epochs="all"),
    "model": lambda root: load_model(root, *(lambda r: (r["model_id"], r["epoch"]))(
        first_file_row(root))),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("tamper, message", [c[1:] for c in OUTSIDE_CASES],
                         ids=[c[0] for c in OUTSIDE_CASES])
def test_a_checkpoint_file_pointing_outside_is_refused_unread(zoo, tmp_path, no_hang, tamper,
                                                              message, reader):
    outside = tmp_path / "outside"
    outside.mkdir()
    evil, canary = outside_twin(zoo, outside, WEIGHT)
    file = checkpoint_file(zoo)
    tamper(file, evil)
    reseal(zoo)
    with pytest.raises(ZooFolderError, match=message) as caught:
        READERS[reader](zoo)
    assert str(file) in str(caught.value)
    assert canary.untouched()


@pytest.mark.parametrize("tamper, message", [c[1:] for c in OUTSIDE_CASES],
                         ids=[c[0] for c in OUTSIDE_CASES])
def test_verify_names_a_checkpoint_file_pointing_outside(zoo, tmp_path, capsys, no_hang, tamper,
                                                         message):
    outside = tmp_path / "outside"
    outside.mkdir()
    evil, canary = outside_twin(zoo, outside, WEIGHT)
    file = checkpoint_file(zoo)
    tamper(file, evil)
    reseal(zoo)
    code, err, _ = verify_outcome(zoo, capsys)
    assert code == 1 and f"{file}: {message}" in err, err
    assert canary.untouched()


@pytest.mark.parametrize("tamper, message", [c[1:] for c in OUTSIDE_CASES],
                         ids=[c[0] for c in OUTSIDE_CASES])
def test_verify_names_a_cell_hdf5_shard_pointing_outside(cell_zoo, tmp_path, capsys, no_hang,
                                                         tamper, message):
    outside = tmp_path / "outside"
    outside.mkdir()
    shard = hdf5_shard(cell_zoo)
    with h5py.File(shard, "r") as handle:
        shape = handle[WEIGHT].shape
    evil = outside / "evil.h5"
    with h5py.File(evil, "w") as handle:
        handle["data"] = np.full(shape, 7.0, np.float32)
    canary = Canary(evil)
    tamper(shard, evil)
    reseal(cell_zoo)
    code, err, _ = verify_outcome(cell_zoo, capsys)
    assert code == 1 and f"{shard}: {message}" in err, err
    assert canary.untouched()


def _soft_link(file: Path) -> None:
    with h5py.File(file, "r+") as handle:
        handle.move("weights/1.weight", "hidden")
        handle["weights/1.weight"] = h5py.SoftLink("/hidden")


def _gzip(file: Path) -> None:
    rewrite_values(file, lambda h, v: h.create_dataset(WEIGHT, data=v, compression="gzip"))


def _shuffle(file: Path) -> None:
    rewrite_values(file, lambda h, v: h.create_dataset(WEIGHT, data=v, shuffle=True))


def _float64(file: Path) -> None:
    rewrite_values(file, lambda h, v: h.create_dataset(WEIGHT, data=v.astype(np.float64)))


def _huge_chunks(file: Path) -> None:
    rewrite_values(file, lambda h, v: h.create_dataset(
        WEIGHT, data=v, maxshape=(None, *v.shape[1:]), chunks=(4096, *v.shape[1:])))


def _extra_dataset(file: Path) -> None:
    with h5py.File(file, "r+") as handle:
        handle["notes"] = np.zeros(3)


def _extra_attribute(file: Path) -> None:
    with h5py.File(file, "r+") as handle:
        handle.attrs["code"] = "import os"


def _renamed_attribute(file: Path) -> None:
    with h5py.File(file, "r+") as handle:
        del handle.attrs["model_id"]
        handle.attrs["code"] = "import os"


def _group_for_dataset(file: Path) -> None:
    rewrite(file, WEIGHT, lambda h, s: h.create_group(WEIGHT))


def _named_type(file: Path) -> None:
    rewrite(file, WEIGHT, lambda h, s: h.__setitem__(WEIGHT, np.dtype("f4")))


def _fewer_epochs(file: Path) -> None:
    rewrite_values(file, lambda h, v: h.create_dataset(WEIGHT, data=v[:-1], chunks=(
        1, *v.shape[1:])))


def _missing_dataset(file: Path) -> None:
    with h5py.File(file, "r+") as handle:
        del handle[WEIGHT]


def _declared_giant(file: Path) -> None:
    """The 34 kB attack: a dataset declaring (3, 16000, 16000) float32 (3 GB), never written."""
    rewrite(file, WEIGHT, lambda h, s: h.create_dataset(WEIGHT, shape=(3, 16000, 16000),
                                                        dtype=np.float32, chunks=(1, 16, 16000)))


def rewrite_values(file: Path, make: Callable[[h5py.File, np.ndarray], None]) -> None:
    with h5py.File(file, "r+") as handle:
        values = handle[WEIGHT][()]
        del handle[WEIGHT]
        make(handle, values)


# (id, tamper, message): what the writers never make, refused naming the object
SHAPE_CASES = [
    ("soft-link", _soft_link, r"/hidden, which this version's writer never makes|/weights/1\."
                              r"weight is a soft link"),
    ("gzip-filter", _gzip, r"/weights/1\.weight has filter 1; this version's writer uses none"),
    ("shuffle-filter", _shuffle, r"/weights/1\.weight has filter 2"),
    ("float64", _float64, r"/weights/1\.weight holds float64; expected <f4"),
    ("huge-chunks", _huge_chunks, r"/weights/1\.weight has chunks of \(4096, 4, 40\)"),
    ("extra-dataset", _extra_dataset, r"holds /notes, which this version's writer never makes"),
    ("extra-attribute", _extra_attribute, r"holds 3 root attributes; this version's writer "
                                          r"sets only layout, model_id"),
    ("renamed-attribute", _renamed_attribute, r"holds root attribute 'code'; this version's "
                                              r"writer sets only layout, model_id"),
    ("group-for-dataset", _group_for_dataset, r"/weights/1\.weight is not a dataset"),
    ("named-datatype", _named_type, r"/weights/1\.weight is not a dataset"),
    ("fewer-epochs", _fewer_epochs, r"its datasets hold 2 different numbers of rows \(2, 3\)"),
    ("missing-dataset", _missing_dataset, r"/weights/1\.weight is missing"),
    ("declared-giant", _declared_giant, r"/weights/1\.weight is \(3, 16000, 16000\); expected "
                                        r"shape \(n, 4, 40\)"),
]


@pytest.mark.parametrize("tamper, message", [c[1:] for c in SHAPE_CASES],
                         ids=[c[0] for c in SHAPE_CASES])
def test_a_checkpoint_file_the_writer_never_makes_is_refused(zoo, no_hang, tamper, message):
    file = checkpoint_file(zoo)
    tamper(file)
    reseal(zoo)
    with pytest.raises(ZooFolderError, match=message) as caught:
        ZooDataset(zoo, split="all", epochs="all")
    assert str(caught.value).startswith(f"{file}: ")
    assert "\n" not in str(caught.value)


def edit_first_row(root: Path, **values: object) -> None:
    shard = models_shard(root)
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0].update(values)
    write_parquet(pa.Table.from_pylist(rows, schema=table.schema), shard)
    reseal(root)


def rows_of_first_file(root: Path) -> list[dict]:
    rows = pq.read_table(models_shard(root)).to_pylist()
    return [r for r in rows if r["weights_file"] == rows[0]["weights_file"]]


@pytest.mark.parametrize("index, message", [
    (-1, r"weights_index -1 is out of range; the file holds checkpoints 0 to 2"),
    (3, r"weights_index 3 is out of range"),
    (2**40, r"weights_index 1099511627776 is out of range"),
], ids=["minus-one", "one-past", "huge"])
def test_a_weights_index_out_of_range_is_refused(zoo, capsys, index, message):
    last = rows_of_first_file(zoo)[-1]  # its sha256 matches what index -1 would serve
    edit_first_row(zoo, weights_index=index, weights_sha256=last["weights_sha256"])
    with pytest.raises(ZooFolderError, match=message):
        ZooDataset(zoo, split="all", epochs="all")
    code, err, _ = verify_outcome(zoo, capsys)
    assert code == 1 and "weights_index" in err and message.split(" ")[0] in err, err


def test_a_checkpoint_of_another_epoch_is_refused_though_its_sha256_matches(zoo, capsys):
    first, *_, last = rows_of_first_file(zoo)
    assert (first["epoch"], last["epoch"]) == (0, 2)
    edit_first_row(zoo, weights_index=last["weights_index"], weights_sha256=last["weights_sha256"])
    file = zoo / first["weights_file"]
    message = f"{file}: checkpoint 2 is epoch 2; the row's epoch is 0"
    with pytest.raises(ZooFolderError, match=message):
        ZooDataset(zoo, split="all", epochs="all")
    code, err, _ = verify_outcome(zoo, capsys)
    assert code == 1 and message in err, err


def test_a_checkpoint_file_of_another_model_is_refused(zoo, capsys):
    rows = pq.read_table(models_shard(zoo)).to_pylist()
    other = next(r for r in rows if r["model_id"] != rows[0]["model_id"])
    edit_first_row(zoo, weights_file=other["weights_file"], weights_sha256=other["weights_sha256"],
                   weights_index=other["weights_index"])
    with pytest.raises(ZooFolderError, match=r"holds model \w+; the row's is " + rows[0]["model_id"]):
        ZooDataset(zoo, split="all", epochs="all")


def test_a_small_file_declaring_gigabytes_is_refused_in_bounded_memory(zoo, file_zoo):
    file = checkpoint_file(zoo)
    _declared_giant(file)
    reseal(zoo)
    assert file.stat().st_size < 100_000  # 3 GB declared, nothing written
    baseline, base_peak = peak_of_reading(file_zoo)
    outcome, peak = peak_of_reading(zoo)
    assert baseline == "read" and outcome.startswith(f"{file}: /weights/1.weight is (3, 16000")
    assert peak < base_peak + (64 << 20), (peak, base_peak)
