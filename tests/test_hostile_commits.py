"""Kill at every rename (issue 21, item 6): `zoo generate`, growth, `zoo relabel` and `zoo card`
stopped before their k-th rename inside the zoo folder, for every k. After each stop every
reader (ZooReader, ZooDataset, `zoo info`, `zoo verify`, the card check `datasets.load_dataset`
relies on) still reads the folder, or refuses in one line where nothing was committed yet; a
rerun then completes to the zoo of an uninterrupted run.

The stop is a BaseException raised in place of `os.replace` in this process (the driver), as a
SIGKILL would leave the folder: nothing after it runs but the unwinding. Renames by Ray workers
(models shards, states, spool) are of files no manifest lists yet; they are not counted."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from analysis.verify import verify
from generators.cli import main
from tests.conftest import write_spec
from zoo.errors import ZooFolderError
from zoo.folder.names import MANIFEST, README
from zoo.folder.reader import ZooReader

ONE_CELL = {"load": {"axis": "width", "values": [4]},
            "temperature": {"axis": "batch_size", "values": [128]}}
UNLISTED = "not listed by the manifest"  # files a killed run wrote before listing them
METRICS_OFF = {"epochs": ["last"], "hessian": {"enabled": False},  # the commits are the same;
               "similarity": {"enabled": False}, "curve": {"enabled": False},  # each run cheaper
               "spectra": False}
INCOMPLETE = "the spec makes"  # a growth killed before it committed the grown cell


class Killed(BaseException):
    """The process dies here (not an Exception: no handler of the code under test takes it)."""


def renames(root: Path, command: Callable[[], object], kill_at: int | None) -> int:
    """Run `command`, stopping it before its `kill_at`-th rename inside `root` (None: never);
    the number of renames inside `root` it made."""
    real, done = os.replace, [0]
    inside = str(root.resolve()) + os.sep

    def replace(source, destination, **kwargs):
        if str(Path(destination).resolve()).startswith(inside):
            done[0] += 1
            if done[0] == kill_at:
                raise Killed(f"rename {kill_at}: {destination}")
        return real(source, destination, **kwargs)

    os.replace = replace
    try:
        command()
    except Killed:
        pass
    finally:
        os.replace = real
    return done[0]


def rows(root: Path) -> dict[str, list[str]]:
    """Every row of the three tables, timings left out (wall-clock seconds vary)."""
    reader = ZooReader(root)
    return {name: sorted(json.dumps({k: v for k, v in row.items() if "seconds" not in k},
                                    sort_keys=True, default=str)
                         for row in reader.table(name).to_pylist())
            for name in ("models", "cells", "pairs")}


def assert_readable(root: Path, capsys) -> None:
    """Every reader works on `root`, or refuses in one line when no manifest was written yet;
    verify runs, and its only problems are what a rerun completes: files a killed run left
    unlisted, and rows a growth had not yet added."""
    from loaders import ZooDataset
    from loaders.hf import hf_data_files

    if not (root / MANIFEST).exists():
        with pytest.raises(ZooFolderError, match="no manifest.json"):
            ZooReader(root)
        capsys.readouterr()
        assert main(["info", str(root)]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        return
    reader = ZooReader(root)  # checks zoo.json and the card as load_dataset's check does
    cells = reader.table("cells")
    committed = cells.num_rows  # each model keeps 3 checkpoints (epochs 0, 1, 2)
    assert reader.table("models").num_rows == 3 * sum(cells.column("num_models").to_pylist())
    if committed:
        dataset = ZooDataset(root, split="all")
        assert len(dataset) > 0 and dataset[0] is not None
    else:  # a manifest with no cell yet: the one line says so
        with pytest.raises(ZooFolderError, match="lists no models shards") as refused:
            ZooDataset(root, split="all")
        assert "\n" not in str(refused.value)
    assert main(["info", str(root)]) == 0, capsys.readouterr().err
    problems = verify(str(root))
    assert all(UNLISTED in p or INCOMPLETE in p for p in problems), problems
    if (root / README).exists():  # what load_dataset opens: regular files, all present
        for config in ("models", "cells"):
            for files in hf_data_files(root, config).values():
                assert all(Path(f).is_file() and not Path(f).is_symlink() for f in files)
    capsys.readouterr()


def kill_everywhere(base: Path, work: Path, command: Callable[[Path], object],
                    reference: Path, capsys) -> int:
    """For every k: a copy of `base`, `command` stopped at rename k, the readers, a rerun,
    the reference's rows. Returns the count of renames."""
    total = renames(reference, lambda: command(reference), None)
    assert total > 0
    expected = rows(reference)
    for k in range(1, total + 1):
        folder = work / f"k{k}"
        if base.exists():
            shutil.copytree(base, folder)
        assert renames(folder, lambda: command(folder), k) == k
        assert_readable(folder, capsys)
        command(folder)
        assert rows(folder) == expected, k
        assert verify(str(folder)) == [], k
        manifest = json.loads((folder / MANIFEST).read_text())
        assert "previous" not in manifest and "retired" not in manifest, k
        shutil.rmtree(folder)
    return total


def cli(*argv: str) -> Callable[[Path], object]:
    def run(folder: Path) -> None:
        assert main([a.replace("FOLDER", str(folder)) for a in argv]) == 0
    return run


@pytest.fixture(scope="module")
def one_cell(tmp_path_factory, ray_runtime) -> tuple[Path, Path]:
    """A one-cell, one-seed zoo and its spec."""
    folder = tmp_path_factory.mktemp("one-cell")
    spec = write_spec(folder, grid=ONE_CELL, seeds=[0], metrics=METRICS_OFF)
    assert main(["generate", str(spec), "--out", str(folder / "zoo"), "--no-progress"]) == 0
    return folder / "zoo", spec


@pytest.mark.slow
def test_a_generate_killed_at_every_rename(one_cell, tmp_path, capsys):
    _, spec = one_cell
    generate = cli("generate", str(spec), "--out", "FOLDER", "--no-progress")
    assert kill_everywhere(tmp_path / "none", tmp_path, generate, tmp_path / "ref", capsys) >= 5


@pytest.mark.slow
def test_a_growth_killed_at_every_rename(one_cell, tmp_path, capsys):
    base, _ = one_cell
    grown = write_spec(tmp_path, grid=ONE_CELL, seeds=[0, 1], metrics=METRICS_OFF)
    shutil.copytree(base, tmp_path / "ref")
    generate = cli("generate", str(grown), "--out", "FOLDER", "--no-progress")
    assert kill_everywhere(base, tmp_path, generate, tmp_path / "ref", capsys) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("argv", [("relabel", "FOLDER", "--cka", "0.01"), ("card", "FOLDER")],
                         ids=["relabel", "card"])
def test_a_relabel_or_card_killed_at_every_rename(one_cell, tmp_path, capsys, argv):
    base, _ = one_cell
    shutil.copytree(base, tmp_path / "ref")
    assert kill_everywhere(base, tmp_path, cli(*argv), tmp_path / "ref", capsys) >= 3
