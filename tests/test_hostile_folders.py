"""Hostile zoo folders: copies of the session's tiny zoo, tampered as a stranger's download
might be. Each case asserts the exact outcome: the error names the file, `zoo verify` gives
exit code 1 (problems) or 2 (unusable), nothing outside the folder is opened, and nothing is
allocated beyond a bound."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tracemalloc
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generators.cli import main
from loaders import ZooDataset, load_model
from zoo.errors import ZooFolderError
from zoo.folder.names import sha256_of
from zoo.folder.reader import ZooReader
from zoo.folder.rowgroups import shard_parts
from zoo.folder.schema import float32_bytes
from zoo.folder.writer import write_parquet

OPENED: list[str] = []
RECORDING = [False]


def _audit(event: str, args: tuple) -> None:
    if RECORDING[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside `watching`


class watching:
    """Record every path Python opens (open, os.open) while inside the block."""

    def __enter__(self) -> list[str]:
        OPENED.clear()
        RECORDING[0] = True
        return OPENED

    def __exit__(self, *exc: object) -> None:
        RECORDING[0] = False


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the zoo holding a canary file no reader may open."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "canary").write_text("never read me")
    return folder


def reseal(root: Path) -> None:
    """Recompute every checksum in the manifest, as an attacker who edits files would."""
    path = root / "manifest.json"
    body = json.loads(path.read_text())
    for shard in body["shards"]:
        file = root / shard["path"]
        if file.is_file() and not file.is_symlink():
            shard["sha256"], shard["bytes"] = sha256_of(file), file.stat().st_size
            if shard.get("parts"):  # format 4: the row groups' digests too, where Parquet
                try:
                    shard["parts"] = list(shard_parts(file))
                except (OSError, pa.ArrowException, ZooFolderError):
                    pass
    for key in body["layouts"]:
        body["layouts"][key] = sha256_of(root / "layouts" / f"{key}.json")
    for name in body["documents"]:
        body["documents"][name] = sha256_of(root / name)
    path.write_text(json.dumps(body))


def models_shard(root: Path, index: int = 0) -> Path:
    return sorted((root / "data" / "models").glob("*.parquet"))[index]


def hdf5_shard(root: Path) -> Path:
    return sorted((root / "hdf5").glob("*.h5"))[0]


def layout_file(root: Path) -> Path:
    return sorted((root / "layouts").glob("*.json"))[0]


def first_row(root: Path) -> tuple[str, int]:
    row = pq.read_table(models_shard(root), columns=["model_id", "epoch"]).to_pylist()[0]
    return row["model_id"], row["epoch"]


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(body))


def rewrite_weights(path: Path, change: Callable[[list[np.ndarray]], list[np.ndarray]],
                    compression: str | None = None) -> None:
    """Replace a models shard's weights by `change(rows)` (written as the writer does, or
    with every column compressed by `compression`)."""
    table = pq.read_table(path)
    rows = [np.frombuffer(w, "<f4") for w in table.column("weights").to_pylist()]
    index = table.column_names.index("weights")
    table = table.set_column(index, "weights", float32_bytes(change(rows)))
    if compression:
        pq.write_table(table, path, compression=compression)
    else:
        write_parquet(table, path)


def verify_outcome(root: Path, capsys, *extra: str) -> tuple[int, str, list[str]]:
    """`zoo verify --deep` on `root`: exit code, stderr (never a traceback), paths opened."""
    with watching() as opened:
        code = main(["verify", str(root), "--deep", *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err, list(opened)


# ---------- tampering, each returning the file that the outcome must name ----------

def symlink_shard(root: Path, outside: Path) -> Path:
    shard = models_shard(root)
    copy = outside / shard.name  # identical bytes: its sha256 matches the manifest
    shutil.copy(shard, copy)
    shard.unlink()
    shard.symlink_to(copy)
    return shard


def symlink_table_folder(root: Path, outside: Path) -> Path:
    folder = root / "data" / "models"
    shutil.move(folder, outside / "models")
    folder.symlink_to(outside / "models")
    return folder


def symlink_document(name: str) -> Callable[[Path, Path], Path]:
    def tamper(root: Path, outside: Path) -> Path:
        shutil.copy(root / name, outside / name)
        (root / name).unlink()
        (root / name).symlink_to(outside / name)
        return root / name
    return tamper


def symlink_layout(root: Path, outside: Path) -> Path:
    layout = layout_file(root)
    shutil.copy(layout, outside / layout.name)
    layout.unlink()
    layout.symlink_to(outside / layout.name)
    return layout


def folder_shard(root: Path, outside: Path) -> Path:
    shard = models_shard(root)
    shard.unlink()
    shard.mkdir()
    return shard


def fifo_shard(root: Path, outside: Path) -> Path:
    shard = models_shard(root)
    shard.unlink()
    os.mkfifo(shard)
    return shard


def manifest_path(path: str) -> Callable[[Path, Path], Path]:
    def tamper(root: Path, outside: Path) -> Path:
        edit_json(root / "manifest.json",
                  lambda body: body["shards"][0].__setitem__("path", path))
        return root / "manifest.json"
    return tamper


def manifest_text(text: str) -> Callable[[Path, Path], Path]:
    return manifest_bytes(text.encode())


def manifest_bytes(data: bytes) -> Callable[[Path, Path], Path]:
    def tamper(root: Path, outside: Path) -> Path:
        (root / "manifest.json").write_bytes(data)
        return root / "manifest.json"
    return tamper


def broken_zoo_json(root: Path, outside: Path) -> Path:
    (root / "zoo.json").write_text("{")
    return root / "zoo.json"


def outside_layout_key(root: Path, outside: Path) -> Path:
    edit_json(root / "manifest.json", lambda body: body["layouts"].__setitem__(
        "../../outside/canary", "0" * 64))
    return root / "manifest.json"


def edited_zoo_json(root: Path, outside: Path) -> Path:
    edit_json(root / "zoo.json", lambda body: body["spec"].__setitem__("name", "other"))
    return root / "zoo.json"


def zoo_json_of_another_spec(root: Path, outside: Path) -> Path:
    edit_json(root / "zoo.json", lambda body: body.__setitem__("spec_hash", "f" * 16))
    reseal(root)
    return root / "zoo.json"


def edited_readme(root: Path, outside: Path) -> Path:
    with open(root / "README.md", "a") as handle:
        handle.write("\nan edit\n")
    return root / "README.md"


def readme_outside(root: Path, outside: Path) -> Path:
    text = (root / "README.md").read_text()
    first = text.index("    path:\n    - ") + len("    path:\n    - ")
    end = text.index("\n", first)
    (root / "README.md").write_text(text[:first] + "../outside/*.parquet" + text[end:])
    reseal(root)
    return root / "README.md"


def unlisted_readme(root: Path, outside: Path) -> Path:
    edit_json(root / "manifest.json", lambda body: body["documents"].pop("README.md"))
    return root / "README.md"


def missing_layout(root: Path, outside: Path) -> Path:
    layout = layout_file(root)
    layout.unlink()
    return layout


def wider_layout(root: Path, outside: Path, factor: int = 100_000) -> Path:
    """A layout whose first weight is made `factor` times larger, resealed."""
    layout = layout_file(root)

    def change(body: dict) -> None:
        entries, offset = body["entries"], 0
        entries[0]["shape"][0] *= factor
        for entry in entries:
            entry["size"] = int(np.prod(entry["shape"]))
            entry["offset"], offset = offset, offset + entry["size"]
        body["size"] = offset
    edit_json(layout, change)
    reseal(root)
    return layout


def transposed_layout(root: Path, outside: Path) -> Path:
    """Same sizes, a shape the architecture does not have, resealed."""
    layout = layout_file(root)
    edit_json(layout, lambda body: body["entries"][0].__setitem__(
        "shape", body["entries"][0]["shape"][::-1]))
    reseal(root)
    return layout


def truncated_shard(root: Path, outside: Path) -> Path:
    shard = models_shard(root)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    reseal(root)
    return shard


def shifted_weights(root: Path, outside: Path) -> Path:
    """One row a weight short, the next a weight long: the shard's total still matches."""
    shard = models_shard(root)
    rewrite_weights(shard, lambda rows: [rows[0][:-1], np.append(rows[1], 0.5), *rows[2:]])
    reseal(root)
    return shard


def nan_in_finite_row(root: Path, outside: Path) -> Path:
    shard = models_shard(root)
    rewrite_weights(shard, lambda rows: [np.where(np.arange(len(rows[0])) == 3, np.nan,
                                                  rows[0]), *rows[1:]])
    reseal(root)
    return shard


def hdf5_value(root: Path, outside: Path) -> Path:
    shard = hdf5_shard(root)
    with h5py.File(shard, "r+") as handle:
        handle["weights/1.bias"][0, 0] += 1.0
    reseal(root)
    return shard


def hdf5_truncated(root: Path, outside: Path) -> Path:
    shard = hdf5_shard(root)
    shard.write_bytes(shard.read_bytes()[:2048])
    reseal(root)
    return shard


def hdf5_shape(root: Path, outside: Path) -> Path:
    shard = hdf5_shard(root)
    with h5py.File(shard, "r+") as handle:
        values = handle["weights/1.bias"][()]
        del handle["weights/1.bias"]
        handle.create_dataset("weights/1.bias", data=np.concatenate([values, values], axis=1))
    reseal(root)
    return shard


def string_bomb(root: Path, outside: Path) -> Path:
    """A cells row whose phase is 8 MB of one letter: a file of kilobytes, resealed."""
    shard = sorted((root / "data" / "cells").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    index = table.column_names.index("phase")
    write_parquet(table.set_column(index, "phase", pa.array(["x" * (8 << 20)])), shard)
    reseal(root)
    return shard


def deep_layout(root: Path, outside: Path) -> Path:
    layout = layout_file(root)
    edit_json(layout, lambda body: body["args"].__setitem__("depth", 10**9))
    reseal(root)
    return layout


def rows_lie(root: Path, outside: Path) -> Path:
    edit_json(root / "manifest.json", lambda body: [
        shard.__setitem__("rows", shard["rows"] + 1) for shard in body["shards"]
        if shard["table"] == "models"])
    return models_shard(root)


def huge_input_shape(root: Path, outside: Path) -> Path:
    edit_json(root / "zoo.json", lambda body: body["data_info"].__setitem__(
        "input_shape", [1 << 20, 1 << 20]))
    reseal(root)
    return root / "zoo.json"


def false_finite_flag(root: Path, outside: Path) -> Path:
    shard = models_shard(root)
    table = pq.read_table(shard)
    flags = [False] + table.column("finite").to_pylist()[1:]
    index = table.column_names.index("finite")
    write_parquet(table.set_column(index, "finite", pa.array(flags)), shard)
    reseal(root)
    return shard


# (id, tamper, reader, expected message): the reader must refuse, naming the file
READER_CASES = [
    ("symlinked-shard", symlink_shard, "dataset", "is a symbolic link"),
    ("symlinked-table-folder", symlink_table_folder, "dataset",
     "is a symbolic link or lies under one"),
    ("symlinked-zoo-json", symlink_document("zoo.json"), "reader", "is a symbolic link"),
    ("symlinked-readme", symlink_document("README.md"), "reader", "is a symbolic link"),
    ("symlinked-manifest", symlink_document("manifest.json"), "reader", "is a symbolic link"),
    ("symlinked-layout", symlink_layout, "model", "is a symbolic link"),
    ("folder-for-shard", folder_shard, "dataset", "is a folder, not a regular file"),
    ("fifo-for-shard", fifo_shard, "dataset", "is a FIFO, not a regular file"),
    ("dotdot-shard-path", manifest_path("../outside/canary"), "reader",
     "leaves the zoo folder"),
    ("absolute-shard-path", manifest_path("/etc/hostname"), "reader", "leaves the zoo folder"),
    ("outside-layout-key", outside_layout_key, "reader", r"malformed manifest \(layouts"),
    ("manifest-is-a-list", manifest_text("[1, 2]"), "reader",
     r"malformed manifest \(expected a mapping, found list\)"),
    ("manifest-nested-deeply", manifest_text("[" * 100_000 + "]" * 100_000), "reader",
     "not a manifest this version can read .nested too deeply"),
    ("manifest-not-json", manifest_text("{shards"), "reader",
     "not a manifest this version can read"),
    ("manifest-not-utf8", manifest_bytes(b"\xff\xfe{"), "reader",
     "not a manifest this version can read"),
    ("edited-zoo-json", edited_zoo_json, "reader", "sha256 does not match the manifest"),
    ("zoo-json-of-another-spec", zoo_json_of_another_spec, "reader",
     "differs from the manifest's"),
    ("edited-readme", edited_readme, "reader", "sha256 does not match the manifest"),
    ("readme-configs-outside", readme_outside, "reader", "which is not a shard of the manifest"),
    ("unlisted-readme", unlisted_readme, "reader", "not covered by the manifest"),
    ("missing-layout", missing_layout, "model", "missing"),
    ("transposed-layout", transposed_layout, "model", "differs from its architecture"),
    ("truncated-shard", truncated_shard, "dataset", "cannot be read as Parquet"),
    ("string-column-bomb", string_bomb, "cells", r"its columns declare \d+ bytes for 1 rows"),
    ("depth-bomb-layout", deep_layout, "model",
     r"names no buildable architecture .*depth: 1000000000 is not allowed; expected at most 256"),
    ("manifest-lies-about-rows", rows_lie, "dataset", r"6 rows, the manifest says 7"),
    ("huge-input-shape", huge_input_shape, "reader", "has a size out of range"),
    ("giant-layout", lambda root, outside: wider_layout(root, outside, 10**8), "dataset",
     r"16000000054 values per checkpoint; at most 1000000000 are read"),
]

READERS: dict[str, Callable[[Path], object]] = {
    "reader": ZooReader,
    "dataset": lambda root: ZooDataset(root, split="all"),
    "model": lambda root: load_model(root, *first_row(root)),
    "cells": lambda root: ZooReader(root).table("cells"),
}


@pytest.fixture
def no_hang():
    """Fail instead of hanging (a FIFO opened for reading waits for a writer)."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("a reader hung"))
    signal.alarm(20)
    yield
    signal.alarm(0)


@pytest.mark.parametrize("tamper, reader, message",
                         [case[1:] for case in READER_CASES],
                         ids=[case[0] for case in READER_CASES])
def test_readers_refuse_a_hostile_folder_naming_the_file(zoo, outside, no_hang, tamper, reader,
                                                         message):
    named = tamper(zoo, outside)
    with watching() as opened, pytest.raises(ZooFolderError, match=message) as caught:
        READERS[reader](zoo)
    assert str(named) in str(caught.value) or str(zoo / "manifest.json") in str(caught.value)
    assert not [p for p in opened if p.startswith(str(outside))]


# (id, tamper, exit code, expected line): `zoo verify --deep` names every problem
VERIFY_CASES = [
    ("symlinked-shard", symlink_shard, 1, "is a symbolic link"),
    ("symlinked-zoo-json", symlink_document("zoo.json"), 2, "is a symbolic link"),
    ("symlinked-layout", symlink_layout, 1, "is a symbolic link"),
    ("folder-for-shard", folder_shard, 1, "is a folder, not a regular file"),
    ("fifo-for-shard", fifo_shard, 1, "is a FIFO, not a regular file"),
    ("dotdot-shard-path", manifest_path("../outside/canary"), 2, "leaves the zoo folder"),
    ("manifest-is-a-list", manifest_text("[]"), 2, "malformed manifest"),
    ("manifest-nested-deeply", manifest_text('{"a":' * 50_000 + "1" + "}" * 50_000), 2,
     "nested too deeply"),
    ("zoo-json-not-json", broken_zoo_json, 2, "not a zoo.json this version can read"),
    ("edited-zoo-json", edited_zoo_json, 1, "sha256 does not match the manifest"),
    ("zoo-json-of-another-spec", zoo_json_of_another_spec, 1, "differs from the manifest's"),
    ("edited-readme", edited_readme, 1, "sha256 does not match the manifest"),
    ("readme-configs-outside", readme_outside, 1,
     r"'\.\./outside/\*\.parquet', which is not a shard"),
    ("missing-layout", missing_layout, 1, "missing"),
    ("wider-layout", wider_layout, 1, "differs from its architecture"),
    ("transposed-layout", transposed_layout, 1, "differs from its architecture"),
    ("truncated-shard", truncated_shard, 1, "cannot be read as Parquet"),
    ("shifted-weights", shifted_weights, 1, "row 0 .* 213 weights; layout mlp-w4-\\w+ has 214"),
    ("nan-in-finite-row", nan_in_finite_row, 1, "finite = true but its weights hold NaN or inf"),
    ("hdf5-value", hdf5_value, 1, "/weights/1.bias differs from the Parquet rows"),
    ("hdf5-truncated", hdf5_truncated, 1, "cannot be read as this version's HDF5 shard"),
    ("hdf5-shape", hdf5_shape, 1, r"/weights/1.bias is \(6, 8\); expected shape \(6, 4\)"),
    ("string-column-bomb", string_bomb, 1, r"its columns declare \d+ bytes for 1 rows"),
    ("depth-bomb-layout", deep_layout, 1, "differ from zoo.json's architecture"),
    ("false-finite-flag", false_finite_flag, 1,
     "row 0 .*: finite = false but its weights and losses are finite"),
    ("huge-input-shape", huge_input_shape, 2, "has a size out of range"),
    ("manifest-lies-about-rows", rows_lie, 1, r"6 rows, the manifest says 7"),
]


@pytest.mark.parametrize("tamper, code, message", [case[1:] for case in VERIFY_CASES],
                         ids=[case[0] for case in VERIFY_CASES])
def test_verify_names_every_problem_in_one_line(zoo, outside, capsys, no_hang, tamper, code,
                                                message):
    named = tamper(zoo, outside)
    found, err, opened = verify_outcome(zoo, capsys)
    assert found == code, err
    lines = [line for line in err.splitlines() if re.search(message, line)]
    assert lines and str(named) in lines[0], err
    assert opened and not [p for p in opened if p.startswith(str(outside))]


def test_an_untouched_copy_verifies_and_reads(zoo, capsys):
    assert main(["verify", str(zoo), "--deep"]) == 0
    assert "every row hold" in capsys.readouterr().out
    assert len(ZooDataset(zoo, split="all", epochs="all")) == 24


def test_the_card_names_only_manifest_shards_by_relative_paths(zoo):
    from zoo.folder.documents import readme_files

    shards = {s.path for s in ZooReader(zoo).manifest.shards}
    files = [file for _, file in readme_files(zoo / "README.md")]
    assert files and set(files) <= shards | {"layouts.parquet"}  # the `layouts` config
    assert all(not f.startswith(("/", "..")) for f in files)


def _point_data_at(root: Path, outside: Path) -> None:
    edit_json(root / "zoo.json", lambda body: body["spec"].__setitem__(
        "data", {**body["spec"]["data"], "root": str(outside)}))
    reseal(root)


def test_loading_models_never_opens_the_data_root_zoo_json_names(zoo, outside):
    _point_data_at(zoo, outside)
    with watching() as opened:
        model = load_model(zoo, *first_row(zoo))
        ZooDataset(zoo, split="all").load_model(0)
    assert model.training is False
    assert not [p for p in opened if p.startswith(str(outside))]


def test_recompute_never_opens_the_data_root_zoo_json_names(zoo, outside, capsys):
    _point_data_at(zoo, outside)
    code, err, opened = verify_outcome(zoo, capsys, "--recompute", "2")
    assert code == 1
    assert "needs it passed with --data-root (the root zoo.json names is never opened)" in err
    assert opened and not [p for p in opened if p.startswith(str(outside))]


def test_recompute_takes_the_data_root_the_user_passes(zoo, outside, tmp_path, capsys):
    _point_data_at(zoo, outside)
    mine = tmp_path / "mine"
    code, err, opened = verify_outcome(zoo, capsys, "--recompute", "2", "--data-root", str(mine))
    assert code == 1  # mnist1d is built in: the user's root is weighed, and refused, in one line
    assert f"data.root: {str(mine)!r} is not used by mnist1d" in err
    assert not [p for p in opened if p.startswith(str(outside))]


def peak_of(read: Callable[[], object], tiny_zoo: Path) -> tuple[int, int]:
    """Peak bytes (Python and numpy, pyarrow's pool) of `read()`, which must raise a
    ZooFolderError; imports are warmed first by reading the untouched zoo."""
    ZooDataset(tiny_zoo, split="all", epochs="all")
    before = pa.default_memory_pool().max_memory()
    tracemalloc.start()
    try:
        with pytest.raises(ZooFolderError) as caught:
            read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    CAUGHT[:] = [str(caught.value)]
    return peak, pa.default_memory_pool().max_memory() - before


CAUGHT: list[str] = []


def test_a_wider_layout_is_refused_before_its_weights_are_allocated(zoo, outside, tiny_zoo):
    named = wider_layout(zoo, outside)
    python, arrow = peak_of(lambda: ZooDataset(zoo, split="all", epochs="all"), tiny_zoo)
    assert re.search(r"declares \d+ bytes of weights \(UNCOMPRESSED\); its rows' layouts "
                     r"hold 384001296", CAUGHT[0])
    assert python < 4 << 20 and arrow < 4 << 20  # the layout asks for 6 rows × 64 MB
    assert json.loads(named.read_text())["size"] == 16_000_054


def test_a_small_shard_whose_weights_decode_to_gigabytes_is_refused_unread(zoo, tiny_zoo):
    shard = models_shard(zoo)
    rewrite_weights(shard, lambda rows: [np.zeros(1 << 24, np.float32), *rows[1:]], "zstd")
    reseal(zoo)
    assert shard.stat().st_size < 1 << 20  # 64 MB of weights in a file of kilobytes
    python, arrow = peak_of(lambda: ZooDataset(zoo, split="all", epochs="all"), tiny_zoo)
    assert re.match(rf"{re.escape(str(shard))}: declares \d+ bytes of weights \(ZSTD\); its "
                    rf"rows' layouts hold 5136, stored uncompressed", CAUGHT[0]), CAUGHT[0]
    assert python < 4 << 20 and arrow < 4 << 20


def test_recompute_tolerance_follows_the_recorded_device_and_precision(zoo, capsys):
    """Metrics recorded 1e-4 (relative) away from a CPU re-evaluation, as TF32 on CUDA gives:
    a CPU zoo is flagged, the same zoo recorded as made with TF32 on CUDA verifies."""
    for shard in sorted((zoo / "data" / "models").glob("*.parquet")):
        table = pq.read_table(shard)
        index = table.column_names.index("test_loss")
        moved = pa.compute.multiply(table.column("test_loss"), 1 + 1e-4)
        write_parquet(table.set_column(index, "test_loss", moved), shard)
    for shard in sorted((zoo / "hdf5").glob("*.h5")):
        with h5py.File(shard, "r+") as handle:
            handle["columns/test_loss"][...] *= 1 + 1e-4
    reseal(zoo)
    code, err, _ = verify_outcome(zoo, capsys, "--recompute", "2")
    assert code == 1 and "(tolerance of fp32 on the CPU)" in err, err
    edit_json(zoo / "zoo.json", lambda body: body["precision"].update(device="cuda",
                                                                      cudnn_allow_tf32=True))
    reseal(zoo)
    assert verify_outcome(zoo, capsys, "--recompute", "2")[0] == 0
