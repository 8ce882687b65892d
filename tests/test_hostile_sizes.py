"""Tiny files that ask for huge allocations, manifests that repeat a shard, grids that size a
figure, and rows the spec never made. Each is refused in one line naming the file, before the
allocation (peak resident memory of a fresh process, against the untouched zoo's), and
`zoo verify` recomputes every row's identity from the spec."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generators.cli import main
from tests.test_hostile_folders import (edit_json, layout_file, models_shard, reseal,
                                        verify_outcome)
from zoo.errors import ZooFolderError
from zoo.folder.reader import ZooReader
from zoo.folder.schema import float32_bytes
from zoo.folder.writer import write_parquet

PEAK_SCRIPT = """
import resource, sys
from loaders import ZooDataset
from zoo.errors import ZooFolderError
try:
    ZooDataset(sys.argv[1], split="all", epochs="all")
    print("read")
except ZooFolderError as error:
    print(str(error).splitlines()[0])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_of_reading(root: Path) -> tuple[str, int]:
    """(outcome line, peak resident bytes) of a fresh process reading `root` with ZooDataset."""
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(root)], capture_output=True,
                         text=True, env={**os.environ, "HF_DATASETS_OFFLINE": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr
    outcome, peak = out.stdout.strip().splitlines()[-2:]
    return outcome, int(peak)


def set_manifest_rows(root: Path, shard: Path, rows: int) -> None:
    relative = shard.relative_to(root).as_posix()
    edit_json(root / "manifest.json", lambda body: [
        s.__setitem__("rows", rows) for s in body["shards"] if s["path"] == relative])


RANDOM_MIB = np.random.default_rng(0).integers(97, 123, 1 << 20, np.uint8).tobytes().decode()


def string_dictionary_bomb(root: Path, rows: int = 1000) -> Path:
    """A models shard of `rows` rows whose torch_version is one random 1 MiB string (it does
    not compress), stored once in a dictionary: a file of 1 MB that decodes to rows MiB."""
    shard = models_shard(root)
    table = pq.read_table(shard).take([0] * rows)
    index = table.column_names.index("torch_version")
    bomb = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)),
                                          pa.array([RANDOM_MIB]))
    table = table.set_column(index, "torch_version", bomb)
    # no stored Arrow schema: the column reads back as plain strings, each value expanded
    pq.write_table(table, shard, compression="zstd", use_dictionary=["torch_version"],
                   store_schema=False)
    set_manifest_rows(root, shard, rows)
    reseal(root)
    return shard


def zeros_bomb(root: Path, dictionary: bool) -> Path:
    """A layout made 20,000 times wider and weights of zeros to match: 96 MB of weights in a
    file of kilobytes (zstd, or a dictionary of one value)."""
    layout = layout_file(root)

    def widen(body: dict) -> None:
        entries, offset = body["entries"], 0
        entries[0]["shape"][0] *= 20_000
        for entry in entries:
            entry["size"] = int(np.prod(entry["shape"]))
            entry["offset"], offset = offset, offset + entry["size"]
        body["size"] = offset
    edit_json(layout, widen)
    size = json.loads(layout.read_text())["size"]
    shards = [p for p in sorted((root / "data" / "models").glob("*.parquet"))
              if pq.read_table(p, columns=["layout"]).column(0)[0].as_py() == layout.stem]
    for shard in shards:  # every shard of the widened layout, as an attacker would
        table = pq.read_table(shard)
        weights = float32_bytes([np.zeros(size, np.float32)] * table.num_rows)
        table = table.set_column(table.column_names.index("weights"), "weights", weights)
        pq.write_table(table, shard, compression="zstd",
                       use_dictionary=["weights"] if dictionary else False)
    reseal(root)
    return shards[0]


@pytest.mark.parametrize("attack, message", [
    (string_dictionary_bomb, r"its columns declare \d+ bytes for 1000 rows; at most 1048576 "
                             r"a row and 268435456 a shard are read"),
    (lambda root: zeros_bomb(root, dictionary=False),
     r"declares \d+ bytes of weights \(ZSTD\); its rows' layouts hold \d+, stored "
     r"uncompressed"),
    (lambda root: zeros_bomb(root, dictionary=True),
     r"declares \d+ bytes of weights \(ZSTD\)|its weights are dictionary-encoded"),
], ids=["string-dictionary", "zstd-zeros", "dictionary-weights"])
def test_a_small_shard_decoding_to_gigabytes_is_refused_in_bounded_memory(zoo, tiny_zoo,  # noqa: F811
                                                                          attack, message):
    shard = attack(zoo)
    assert shard.stat().st_size < 2 << 20
    baseline, base_peak = peak_of_reading(tiny_zoo)
    outcome, peak = peak_of_reading(zoo)
    assert baseline == "read"
    assert outcome.startswith(f"{shard}: ") and re.search(message, outcome), outcome
    assert peak < base_peak + (48 << 20), (peak, base_peak)


def test_dictionary_encoded_weights_are_refused_by_name(zoo):  # noqa: F811
    shard = models_shard(zoo)
    table = pq.read_table(shard)
    pq.write_table(table, shard, use_dictionary=True, compression="none")
    reseal(zoo)
    with pytest.raises(ZooFolderError, match="its weights are dictionary-encoded"):
        ZooReader(zoo).table("models")


def test_a_manifest_listing_one_shard_20000_times_is_refused_at_once(zoo, capsys):  # noqa: F811
    def repeat(body: dict) -> None:
        body["shards"] = body["shards"] + [body["shards"][0]] * 20_000
    edit_json(zoo / "manifest.json", repeat)
    start = time.perf_counter()
    with pytest.raises(ZooFolderError, match=r"manifest.json: malformed manifest \(shard "
                                             r"'data/\w+/cell-\w+\.parquet' is listed more"):
        ZooReader(zoo)
    assert main(["info", str(zoo)]) == 2
    assert time.perf_counter() - start < 10  # was 138 s: every entry read again
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is listed more than once" in err[0]


@pytest.mark.parametrize("values, message", [
    (list(range(1, 1001)), r"load axis values \[1, 2, 3, .*\.\.\. are not at most 64 finite"),
    ([1, float("nan")], r"load axis values \[1, nan\] are not at most 64 finite numbers"),
    ([1, "wide"], r"load axis values \[1, 'wide'\] are not"),
    ([1, True], r"load axis values \[1, True\] are not"),
], ids=["thousand-values", "nan", "string", "bool"])
def test_plot_refuses_grid_values_that_size_a_huge_figure(zoo, capsys, values, message):  # noqa: F811
    edit_json(zoo / "zoo.json", lambda body: body["spec"]["load_axis"].__setitem__(
        "values", values))
    reseal(zoo)
    code = main(["plot", str(zoo)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"zoo: error: {zoo / 'zoo.json'}: ") and \
        re.search(message, err[0]), err[0]
    assert not (zoo / "plots").exists()


def edit_row(root: Path, shard: Path, index: int = 0, **values: object) -> None:
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[index].update(values)
    write_parquet(pa.Table.from_pylist(rows, schema=table.schema), shard)
    reseal(root)


def other_cell(root: Path) -> str:
    first = pq.read_table(models_shard(root), columns=["cell_id"]).column(0)[0].as_py()
    return next(s["cell_id"] for s in json.loads((root / "manifest.json").read_text())["shards"]
                if s["cell_id"] != first)


# (id, change of the first models row, the line verify must print)
ROW_CASES = [
    ("made-up-model", {"model_id": "0123456789abcdef"},
     r"row 0 \(model 0123456789abcdef epoch 0\): its model id is not one the spec makes"),
    ("seed-77", {"seed": 77}, r"row 0 \(model \w+ epoch 0\): seed 77; the spec makes 0"),
    ("epoch-minus-5", {"epoch": -5}, r"epoch -5 is not a kept epoch of the spec \(\[0, 1, 2\]\)"),
    ("epoch-7", {"epoch": 7}, r"epoch 7 is not a kept epoch of the spec"),
    ("another-cell", "other-cell", r"cell_id \w+; the spec makes \w+"),
    ("data-fingerprint", {"data_fingerprint": "f" * 64}, r"data_fingerprint f{64}; the spec "
                                                         r"makes \w+"),
    ("escape-in-id", {"model_id": "\x1b[2Jcleared"}, r"model \\x1b\[2Jcleared epoch 0"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in ROW_CASES],
                         ids=[c[0] for c in ROW_CASES])
def test_verify_refuses_rows_the_spec_never_made(zoo, capsys, change, message):  # noqa: F811
    shard = models_shard(zoo)
    edit_row(zoo, shard, **({"cell_id": other_cell(zoo)} if change == "other-cell" else change))
    code, err, _ = verify_outcome(zoo, capsys)
    lines = [line for line in err.splitlines() if re.search(message, line)]
    assert code == 1 and lines and lines[0].startswith(f"problem: {shard}: "), err
    assert "\x1b" not in err


def test_verify_refuses_a_pairs_row_of_a_model_of_another_cell(zoo, capsys):  # noqa: F811
    shard = sorted((zoo / "data" / "pairs").glob("*.parquet"))[0]
    stranger = pq.read_table(models_shard(zoo, 1), columns=["model_id"]).column(0)[0].as_py()
    edit_row(zoo, shard, model_id_b=stranger)
    code, err, _ = verify_outcome(zoo, capsys)
    assert code == 1 and f"{shard}: row 0: model_id_b {stranger} is not a model of cell" in err


@pytest.mark.parametrize("plant", ["hdf5-copy", "parquet-copy", "symlink", "layout"])
def test_verify_names_files_the_manifest_does_not_list(zoo, tmp_path, capsys, plant):  # noqa: F811
    if plant == "hdf5-copy":
        source = sorted((zoo / "hdf5").glob("*.h5"))[0]
        extra = source.with_name("cell-0000000000000000_deadbeef.h5")
        shutil.copy(source, extra)
    elif plant == "parquet-copy":
        extra = models_shard(zoo).with_name("cell-0000000000000000_deadbeef.parquet")
        shutil.copy(models_shard(zoo), extra)
    elif plant == "symlink":
        (tmp_path / "outside").mkdir()
        extra = zoo / "data" / "models" / "elsewhere"
        extra.symlink_to(tmp_path / "outside")
    else:
        extra = zoo / "layouts" / "mlp-w99-00000000.json"
        shutil.copy(layout_file(zoo), extra)
    code, err, opened = verify_outcome(zoo, capsys)
    assert code == 1 and f"problem: {extra}: not listed by the manifest" in err, err
    assert str(extra) not in opened
