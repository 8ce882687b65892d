"""The curve-budget benchmark refits a real zoo's curves as generation fitted them."""

from benchmarks.curve_budget import refit, relabel_table
from zoo.folder.reader import ZooReader


def test_a_refit_at_the_stored_budget_equals_the_stored_pairs(tiny_zoo):
    reader = ZooReader(tiny_zoo)
    keys = {c["cell_id"]: f"{c['load_value']:g}:{c['temperature_value']:g}"
            for c in reader.table("cells").to_pylist()}
    stored = {keys[p["cell_id"]]: p for p in reader.table("pairs").to_pylist()}  # 1 pair a cell
    refitted = refit(tiny_zoo, None)
    assert sorted(refitted) == sorted(stored) == ["4:128", "4:512", "8:128", "8:512"]
    for key, (pair,) in refitted.items():
        for column in ("curve_mc_history", "mc_train_error", "mc_projected", "mc_converged",
                       "curve_train_error", "mc_test_loss"):
            assert pair[column] == stored[key][column], (key, column)
    table = relabel_table(tiny_zoo, refitted)
    assert table.endswith("different after the refit: 0") and table.count("\n| ") == 4


def test_a_refit_takes_other_curve_settings_and_only_the_cells_asked_for(tiny_zoo):
    refitted = refit(tiny_zoo, ["8:512"], steps=10, max_rounds=2, tolerance=1e-12)
    assert list(refitted) == ["8:512"]
    (pair,) = refitted["8:512"]
    assert pair["curve_rounds"] == 2 and pair["curve_steps"] == 20
    assert not pair["mc_converged"]  # two rounds give no ratio: the drift is unbounded
