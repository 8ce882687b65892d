"""`zoo relabel`: labels recomputed from stored numbers, committed as new shards, never in place."""

from __future__ import annotations

import shutil

import pytest

from generators.cli import main
from generators.relabel import relabel
from analysis.verify import verify
from zoo.folder.reader import ZooReader
from zoo.folder.names import MANIFEST
from zoo.phases import Thresholds, cell_phase


@pytest.fixture()
def zoo_copy(tiny_zoo, tmp_path):
    return shutil.copytree(tiny_zoo, tmp_path / "zoo")


def test_dry_run_writes_nothing_and_prints_old_and_new(zoo_copy, capsys):
    manifest = (zoo_copy / MANIFEST).read_bytes()
    assert main(["relabel", str(zoo_copy), "--dry-run", "--high-loss", "100"]) == 0
    out = capsys.readouterr().out
    assert "before" in out and "after" in out and "high_loss': 100.0" in out
    assert (zoo_copy / MANIFEST).read_bytes() == manifest
    assert "wrote" not in out


def test_relabel_applies_the_thresholds_to_the_stored_means(zoo_copy):
    result = relabel(zoo_copy, {"high_loss": 100.0, "cka": 0.0})
    thresholds = Thresholds(high_loss=100.0, mc=2.0, cka=0.0)
    assert result.thresholds == {"cka": 0.0, "cka_metric": "cka_mixup", "high_loss": 100.0,
                                 "mc": 2.0, "mc_bound": "two-sided"}
    cells = ZooReader(zoo_copy).table("cells").to_pylist()
    assert len(cells) == 4
    for row in cells:
        assert (row["phase"], row["phase_confident"]) == cell_phase(row, "classification",
                                                                   thresholds)
        # nothing is high loss; every CKA is high; mc >= 2 at low loss is in no phase of Yang's
        assert row["phase"] in ("III", "IV-B", None)
        assert (row["phase"] is None) is (row["mc_train_error_mean"] >= 2.0)
        assert (row["phase_high_loss"], row["phase_cka"]) == (100.0, 0.0)
    # the other columns are the stored ones
    before = {r["cell_id"]: r for r in result.before}
    for row in cells:
        assert row["mc_train_error_mean"] == before[row["cell_id"]]["mc_train_error_mean"]


def test_new_shards_replace_the_old_ones_through_the_manifest(zoo_copy):
    old = sorted(p.name for p in (zoo_copy / "data" / "cells").glob("*.parquet"))
    first = relabel(zoo_copy, {"mc": 50.0})
    # four cells shards, and four models shards whose repeated cell columns follow the label
    assert len(first.written) == 8 and all("relabel-" in p.name for p in first.written)
    files = sorted(p.name for p in (zoo_copy / "data" / "cells").glob("*.parquet"))
    assert len(files) == 4 and not set(files) & set(old)  # the old files are gone
    models = ZooReader(zoo_copy).table("models", columns=["cell_id", "phase", "phase_confident"])
    labels = {r["cell_id"]: (r["phase"], r["phase_confident"]) for r in first.after}
    assert all(labels[c] == (p, k) for c, p, k in zip(*models.to_pydict().values()))
    second = relabel(zoo_copy, {"mc": 50.0})  # the same thresholds again: new names
    assert not {p.name for p in second.written} & {p.name for p in first.written}
    assert second.moved() == []
    assert verify(zoo_copy) == []


def test_relabel_back_to_the_defaults_restores_the_generated_labels(zoo_copy, tiny_zoo):
    relabel(zoo_copy, {"high_loss": 0.01})
    relabel(zoo_copy)
    generated = {r["cell_id"]: (r["phase"], r["phase_confident"])
                 for r in ZooReader(tiny_zoo).table("cells").to_pylist()}
    again = {r["cell_id"]: (r["phase"], r["phase_confident"])
             for r in ZooReader(zoo_copy).table("cells").to_pylist()}
    assert again == generated


def test_bad_thresholds_are_one_line_errors(zoo_copy, capsys):
    assert main(["relabel", str(zoo_copy), "--cka", "1.5"]) == 2
    assert "phases.cka must be a number in [0, 1], got 1.5" in capsys.readouterr().err


def test_relabel_applies_the_other_definitions(zoo_copy):
    ours = relabel(zoo_copy, {"cka_metric": "cka", "mc_bound": "lower"}, dry_run=True)
    thresholds = Thresholds(high_loss=0.2, mc=2.0, cka=0.9, cka_metric="cka", mc_bound="lower")
    for row in ours.after:
        assert (row["phase"], row["phase_confident"]) == cell_phase(row, "classification",
                                                                   thresholds)
        assert (row["phase_cka_metric"], row["phase_mc_bound"]) == ("cka", "lower")


def test_cli_relabel_takes_the_definitions(zoo_copy, capsys):
    assert main(["relabel", str(zoo_copy), "--cka-metric", "cka", "--mc-bound", "lower",
                 "--dry-run"]) == 0
    assert "'cka_metric': 'cka'" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="2"):  # argparse names the allowed choices
        main(["relabel", str(zoo_copy), "--mc-bound", "upper"])
