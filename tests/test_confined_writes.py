"""Writes inside a zoo folder stay inside it (issue 21, item 1): symbolic links and FIFOs
planted where generate, card, relabel, plot, study and the training state write are refused
in one line naming the path, and no byte outside the folder is written or deleted (canary
files keep their content and mtime)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from generators.cli import main
from tests.conftest import write_spec
from zoo.errors import ZooFolderError
from zoo.folder.names import SPOOL, STATE
from zoo.folder.reader import ZooReader
from zoo.folder.zoofolder import ZooFolder
from zoo.train.spool import Spool


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder beside the zoo with canary files (one in a subfolder) nothing may touch."""
    folder = tmp_path / "victim"
    (folder / "sub").mkdir(parents=True)
    (folder / "important.txt").write_text("keep me")
    (folder / "sub" / "notes.txt").write_text("and me")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` (not following links) with its bytes and mtime."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def one_line_error(capsys, argv: list[str], named: Path) -> str:
    """Run the CLI: exit 2, one error line (the last; generate prints its plan before) without
    a traceback, naming `named`."""
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert code == 2, err
    assert len(errors) == 1 and err.strip().endswith(errors[0]) and "Traceback" not in err, err
    assert str(named) in errors[0], errors[0]
    return errors[0]


def drop_cell(root: Path) -> str:
    """Remove one cell from the manifest (its files become a killed run's leftovers), so
    generate trains it again; returns the id of one of its models."""
    models = ZooReader(root).table("models", columns=["model_id", "cell_id"]).to_pylist()
    path = root / "manifest.json"
    body = json.loads(path.read_text())
    cell = models[0]["cell_id"]
    body["shards"] = [s for s in body["shards"] if s["cell_id"] != cell]
    path.write_text(json.dumps(body))
    return models[0]["model_id"]


# --- generate: the start-up clean-up, shards, manifest ------------------------------------------

@pytest.mark.parametrize("folder", ["hdf5", "data/models", "layouts"])
def test_generate_refuses_a_symlinked_shard_folder_and_deletes_nothing_outside(
        zoo, victim, tmp_path, capsys, folder):
    shutil.rmtree(zoo / folder)
    (zoo / folder).symlink_to(victim)
    (victim / "stray.parquet.partial").write_text("looks like a leftover")
    before = snapshot(victim)
    line = one_line_error(capsys, ["generate", str(write_spec(tmp_path)), "--out", str(zoo),
                                   "--no-progress"], zoo / folder)
    assert "symbolic link" in line
    assert snapshot(victim) == before


def test_generate_refuses_a_symlinked_unlisted_file_in_a_shard_folder(zoo, victim, tmp_path,
                                                                       capsys):
    link = zoo / "hdf5" / "cell-x_00000000.h5"
    link.symlink_to(victim / "important.txt")
    before = snapshot(victim)
    one_line_error(capsys, ["generate", str(write_spec(tmp_path)), "--out", str(zoo),
                            "--no-progress"], link)
    assert snapshot(victim) == before and link.is_symlink()


def test_generate_refuses_a_fifo_in_a_shard_folder_without_waiting(zoo, tmp_path, capsys):
    fifo = zoo / "data" / "cells" / "cell-x_00000000.parquet"
    os.mkfifo(fifo)
    line = one_line_error(capsys, ["generate", str(write_spec(tmp_path)), "--out", str(zoo),
                                   "--no-progress"], fifo)
    assert "FIFO" in line


@pytest.mark.parametrize("name", ["manifest.json.partial", "zoo.json.partial"])
def test_generate_refuses_a_symlinked_temporary_document(zoo, victim, tmp_path, capsys, name):
    (zoo / name).symlink_to(victim / "important.txt")
    before = snapshot(victim)
    one_line_error(capsys, ["generate", str(write_spec(tmp_path)), "--out", str(zoo),
                            "--no-progress"], zoo / name)
    assert snapshot(victim) == before


# --- card and relabel ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["card"], ["relabel", "--mc", "0.2"]])
@pytest.mark.parametrize("name", ["manifest.json.partial", "README.md.partial",
                                  "layouts.parquet.partial"])
def test_card_and_relabel_refuse_a_symlinked_temporary_file(zoo, victim, capsys, command, name):
    (zoo / name).symlink_to(victim / "important.txt")
    before = snapshot(victim)
    one_line_error(capsys, [command[0], str(zoo), *command[1:]], zoo / name)
    assert snapshot(victim) == before


def test_relabel_refuses_a_symlinked_table_folder(zoo, victim, capsys):
    cells = zoo / "data" / "cells"
    shutil.copytree(cells, victim / "cells")
    shutil.rmtree(cells)
    cells.symlink_to(victim / "cells")
    before = snapshot(victim)
    one_line_error(capsys, ["relabel", str(zoo), "--mc", "0.2"], cells)
    assert snapshot(victim) == before


# --- plot and study -----------------------------------------------------------------------------

@pytest.mark.parametrize("planted", ["folder", "file"])
def test_plot_refuses_links_under_plots(zoo, victim, capsys, planted):
    pytest.importorskip("matplotlib")
    if planted == "folder":
        named = zoo / "plots"
        named.symlink_to(victim)
    else:
        (zoo / "plots").mkdir()
        named = zoo / "plots" / "phases.png"
        named.symlink_to(victim / "important.txt")
    before = snapshot(victim)
    one_line_error(capsys, ["plot", str(zoo)], named)
    assert snapshot(victim) == before


@pytest.mark.parametrize("planted", ["studies", "studies/averaging",
                                     "studies/averaging/averaging.parquet"])
def test_study_refuses_links_under_studies(zoo, victim, capsys, planted):
    named = zoo / planted
    named.parent.mkdir(parents=True, exist_ok=True)
    named.symlink_to(victim / "important.txt" if planted.endswith(".parquet") else victim)
    before = snapshot(victim)
    one_line_error(capsys, ["study", "averaging", str(zoo), "--no-progress"], named)
    assert snapshot(victim) == before


# --- training state and spool -------------------------------------------------------------------

@pytest.mark.parametrize("planted", ["model", "spool"])
def test_generate_refuses_a_symlinked_state_folder_before_training(zoo, victim, tmp_path, capsys,
                                                                   planted):
    model_id = drop_cell(zoo)
    (zoo / STATE).mkdir()
    named = zoo / (SPOOL if planted == "spool" else f"{STATE}/{model_id}")
    named.symlink_to(victim)
    before = snapshot(victim)
    one_line_error(capsys, ["generate", str(write_spec(tmp_path)), "--out", str(zoo),
                            "--no-progress"], named)
    assert snapshot(victim) == before


def test_spool_writes_and_clears_nothing_through_a_link(tmp_path, victim):
    import torch

    spool = Spool(tmp_path / "spool")
    spool.save("m-a", 0, {"w": torch.ones(2)})
    (tmp_path / "spool" / "m-b").symlink_to(victim)
    before = snapshot(victim)
    with pytest.raises(ZooFolderError, match=re.escape(str(tmp_path / "spool" / "m-b"))):
        spool.save("m-b", 0, {"w": torch.ones(2)})
    with pytest.raises(ZooFolderError, match="symbolic link"):
        spool.clear(["m-b"])
    spool.clear(["m-a"])
    assert snapshot(victim) == before and not (tmp_path / "spool" / "m-a").exists()


def test_a_spool_write_survives_another_task_removing_the_emptied_spool(tmp_path, monkeypatch):
    root = tmp_path / "state" / "spool"
    done, writing = Spool(root), Spool(root)  # two tasks' cells sharing the zoo's spool
    done.save("m-a", 0, {"w": torch.zeros(2)})
    real, cleared = os.mkdir, []

    def mkdir(path, *args, **kwargs):
        if Path(path).name == "m-b" and not cleared:  # the other task commits right now:
            cleared.append(True)  # its clear removes the spool folder, empty at that moment
            done.clear(["m-a"])
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    writing.save("m-b", 0, {"w": torch.ones(2)})
    assert cleared and not (root / "m-a").exists()
    assert writing.load("m-b", 0, ["w"])["w"].tolist() == [1.0, 1.0]


# --- the folder object itself -------------------------------------------------------------------

def test_zoo_folder_delete_tree_refuses_a_link_inside_and_removes_nothing(tmp_path, victim):
    folder = ZooFolder(tmp_path / "zoo")
    folder.write("state/m-a/state.json", b"{}")
    (tmp_path / "zoo" / "state" / "m-a" / "escape").symlink_to(victim)
    before = snapshot(victim)
    with pytest.raises(ZooFolderError, match=re.escape(str(tmp_path / "zoo/state/m-a/escape"))):
        folder.delete_tree("state")
    assert snapshot(victim) == before
    assert (tmp_path / "zoo" / "state" / "m-a" / "state.json").read_bytes() == b"{}"


def test_zoo_folder_refuses_paths_that_leave_it(tmp_path):
    folder = ZooFolder(tmp_path / "zoo")
    for relative in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(ZooFolderError, match="not a plain path inside"):
            folder.write(relative, b"")
    assert not (tmp_path / "x").exists()


def test_zoo_folder_is_a_file_is_refused_once_in_one_line(tmp_path):
    (tmp_path / "zoo.txt").write_text("not a folder")
    with pytest.raises(ZooFolderError, match=r"zoo\.txt: is a file, not a folder"):
        ZooFolder(tmp_path / "zoo.txt")
    assert (tmp_path / "zoo.txt").read_text() == "not a folder"
