"""The weight-space benchmark: splits that hold out whole cells, exact scores, an equivariant
network, and `zoo benchmark` writing the same table twice (and into the card)."""

import math
import shutil
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from analysis.benchmark import Benchmark, run_benchmark
from analysis.benchmark.evaluator import interval, score
from analysis.benchmark.npnfn import NPNFN
from analysis.benchmark.splits import make_schemes, read_splits
from generators.cli import main
from zoo.folder.card import write_card


def grid_columns(loads, temperatures, seeds=(0, 1)):
    """Model-row columns of a full grid (one row per cell and seed)."""
    rows = [(l, t, s) for l in loads for t in temperatures for s in seeds]
    return {"load_value": np.array([r[0] for r in rows], float),
            "temperature_value": np.array([r[1] for r in rows], float),
            "cell_id": np.array([f"c{r[0]}-{r[1]}" for r in rows], object),
            "seed": np.array([r[2] for r in rows])}


def test_cell_folds_spread_every_axis_value_and_never_hold_one_cell():
    columns = grid_columns([16, 128, 512], [16, 64, 512])
    schemes, skipped = make_schemes(columns, seed=0)
    folds = schemes["cell"].folds
    assert len(folds) == 4 and not skipped
    assert sorted(c for f in folds for c in f) == sorted(set(columns["cell_id"]))
    assert min(len(f) for f in folds) >= 2
    assert schemes["extrapolation"].folds == (("c512-16", "c512-64", "c512-512"),)
    assert schemes["seed"].folds in (((0,), (1,)), ((1,), (0,)))
    assert make_schemes(columns, seed=0)[0] == schemes  # seeded
    assert make_schemes(columns, seed=1)[0]["cell"] != schemes["cell"]
    small = grid_columns([4], [1, 2, 3], seeds=(0,))
    schemes, skipped = make_schemes(small, seed=0)
    assert schemes == {} and skipped == {
        "cell": "needs 4 or more cells, the zoo has 3",
        "extrapolation": "needs two load values and two held-out cells",
        "seed": "needs two seeds, the zoo has 1"}


def test_scores_are_exact_and_undefined_ones_are_nan():
    assert score("regression", [1, 2, 3, 4], [1, 2, 3, 5]) == {"r2": 0.8, "kendall_tau": 1.0}
    assert score("classification", [0, 0, 1, 1], [0, 1, 1, 1]) == {"balanced_accuracy": 0.75}
    assert all(math.isnan(v) for v in score("regression", [2, 2], [1, 3]).values())
    assert math.isnan(score("classification", [1, 1], [1, 0])["balanced_accuracy"])


def test_balanced_accuracy_is_sklearns_without_its_warning_on_phases_a_fold_lacks():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    warned = 0
    for _ in range(50):
        y_true, y_pred = rng.integers(0, 3, 9), rng.integers(0, 5, 9)  # 3, 4: not in y_true
        if len(np.unique(y_true)) < 2:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            expected = balanced_accuracy_score(y_true, y_pred)
        warned += len(caught)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert score("classification", y_true, y_pred)["balanced_accuracy"] == expected
    assert warned > 10  # sklearn warns "y_pred contains classes not in y_true"


def test_npnfn_output_ignores_a_permutation_of_hidden_units():
    torch.manual_seed(0)
    layers = [(torch.randn(3, 1, 5, 4), torch.randn(3, 1, 5)),
              (torch.randn(3, 1, 6, 5), torch.randn(3, 1, 6)),
              (torch.randn(3, 1, 2, 6), torch.randn(3, 1, 2))]
    model = NPNFN([1, 1, 1], outputs=2)
    p, q = torch.randperm(5), torch.randperm(6)
    permuted = [(layers[0][0][:, :, p], layers[0][1][:, :, p]),
                (layers[1][0][:, :, q][:, :, :, p], layers[1][1][:, :, q]),
                (layers[2][0][:, :, :, q], layers[2][1])]
    with torch.no_grad():
        out, again = model(layers), model(permuted)
        changed = model([(layers[0][0] * 2, layers[0][1]), *layers[1:]])
    assert torch.allclose(out, again, atol=1e-5)
    assert not torch.allclose(out, changed, atol=1e-5)


@pytest.mark.slow
def test_zoo_benchmark_writes_the_same_table_twice_and_the_card_shows_it(tiny_zoo, tmp_path,
                                                                         capsys):
    root = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, root)
    assert main(["benchmark", str(root)]) == 0
    assert "wrote " in capsys.readouterr().out
    files = sorted(p.name for p in (root / "benchmark").iterdir())
    assert files == ["results.md", "results.parquet", "results.png", "splits.json"]
    first = pq.read_table(root / "benchmark" / "results.parquet").to_pylist()
    assert {r["baseline"] for r in first} == {"hyperparameters", "stats_gbm", "stats_linear",
                                              "npnfn"}
    assert {r["scheme"] for r in first} == {"cell", "extrapolation", "seed"}
    assert {r["task"] for r in first} == {"test_accuracy", "generalization_gap", "width",
                                          "batch_size"}
    bench = Benchmark(root)
    assert read_splits(root) == bench.schemes
    cell = bench.schemes["cell"].folds
    assert len(cell) == 2 and all(len(f) == 2 for f in cell)
    again = run_benchmark(root, baselines=["stats_gbm", "npnfn"], log=None).rows
    chosen = [r for r in first if r["baseline"] in ("stats_gbm", "npnfn")]
    np.testing.assert_equal(again, chosen)  # NaN (undefined scores) equal to NaN
    card = write_card(root).read_text()
    table = (root / "benchmark" / "results.md").read_text().strip()
    assert "## Benchmark" in card and table in card
