"""Landscape metrics wired into generation: model, pair and cell columns of a real zoo."""

import math

import pytest

from tests.conftest import TINY_SPEC
from zoo import datasets
from zoo.folder.reader import ZooReader
from zoo.measure import cka_columns, curve_columns, model_metrics
from zoo.objective import Objective
from zoo.phases import PHASES
from zoo.specfile import parse_spec
from zoo.training import build_model


def test_metric_epoch_rows_carry_hessian_and_spectra_and_others_do_not(tiny_zoo):
    rows = ZooReader(tiny_zoo).table("models").to_pylist()
    for row in rows:
        if row["is_metric_epoch"]:
            assert row["epoch"] == 2
            assert math.isfinite(row["hessian_top_eigenvalue_train"])
            assert row["hessian_trace_stderr_test"] >= 0
            assert row["hessian_samples"] == 64 and row["hessian_max_iter"] == 20
            assert len(row["heavy_tail_alphas"]) == 2  # two weight matrices (depth 1)
        else:
            assert row["hessian_top_eigenvalue_train"] is None


def test_every_cell_is_labelled_and_pairs_are_complete(tiny_zoo):
    reader = ZooReader(tiny_zoo)
    cells = reader.table("cells").to_pylist()
    pairs = reader.table("pairs").to_pylist()
    assert len(cells) == 4 and len(pairs) == 4  # one seed pair per cell
    for cell in cells:
        assert cell["phase"] in PHASES
        assert cell["phase_high_loss"] == 0.2 and cell["phase_cka"] == 0.9
        assert cell["num_pairs"] == 1 and cell["metric_epoch"] == 2
    for pair in pairs:
        assert pair["curve_ts"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert pair["curve_steps"] == 40
        assert -100 <= pair["mc_train_error"] <= 100
        assert 0 <= pair["cka"] <= 1 + 1e-9 and 0 <= pair["cka_mixup"] <= 1 + 1e-9
        # the curve's ends are the two models: their errors are the recorded ones
        assert pair["curve_train_error"][0] == pair["linear_train_error"][0]


def test_cell_means_agree_with_the_models_and_pairs(tiny_zoo):
    reader = ZooReader(tiny_zoo)
    models = reader.table("models").to_pylist()
    pairs = {p["cell_id"]: p for p in reader.table("pairs").to_pylist()}
    for cell in reader.table("cells").to_pylist():
        losses = [m["train_loss"] for m in models
                  if m["cell_id"] == cell["cell_id"] and m["epoch"] == 2]
        assert cell["train_loss_mean"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)
        assert cell["mc_train_error_mean"] == pairs[cell["cell_id"]]["mc_train_error"]


@pytest.fixture(scope="module")
def digits_pair():
    spec = parse_spec({**TINY_SPEC, "data": {"name": "digits"}})
    bundle = datasets.load("digits")
    cell = spec.cells()[0]
    return spec, bundle, build_model(spec, cell, bundle, 0), build_model(spec, cell, bundle, 1)


def test_identical_models_have_cka_one_and_no_linear_barrier(digits_pair):
    spec, bundle, a, _ = digits_pair
    objective = Objective(bundle)
    assert cka_columns(a, a, objective, spec.metrics)["cka"] == pytest.approx(1.0, abs=1e-12)
    row = curve_columns(a, a, objective, spec.metrics, seed=0)
    assert row["linear_barrier_train_loss"] == pytest.approx(0.0, abs=1e-6)
    assert len(set(row["linear_train_loss"])) == 1


def test_pinn_models_get_hessian_of_their_pde_loss():
    spec = parse_spec({**TINY_SPEC, "architecture": {"family": "pinn-mlp", "width": 4},
                       "data": {"name": "convection", "args": {"collocation": 64}},
                       "grid": {"load": {"axis": "beta", "values": [1.0]},
                                "temperature": {"axis": "learning_rate", "values": [0.01]}}})
    bundle = datasets.load("convection", args={"collocation": 64})
    model = build_model(spec, spec.cells()[0], bundle, 0)
    row = model_metrics(model, Objective(bundle, beta=1.0), spec.metrics, seed=0)
    assert math.isfinite(row["hessian_top_eigenvalue_train"])
    assert row["hessian_top_eigenvalue_train"] > 0
    assert math.isfinite(row["hessian_trace_test"])


@pytest.mark.parametrize("family, data, args", [
    ("vit", "digits", {"patch_size": 2, "depth": 1, "heads": 2}),
    ("gpt", "stdlib-text", {"depth": 1, "heads": 2})])
def test_attention_models_get_hessians_through_the_math_attention_kernel(family, data, args):
    data_args = {"max_chars": 4000, "context": 16} if data == "stdlib-text" else {}
    spec = parse_spec({**TINY_SPEC, "architecture": {"family": family, "width": 8, "args": args},
                       "data": {"name": data, "args": data_args},
                       "metrics": {"hessian": {"batches": 1, "batch_size": 16, "max_iter": 5}}})
    bundle = datasets.load(data, args=data_args)
    model = build_model(spec, spec.cells()[0], bundle, 0)
    row = model_metrics(model, Objective(bundle), spec.metrics, seed=0)
    assert math.isfinite(row["hessian_top_eigenvalue_train"])
    assert math.isfinite(row["hessian_trace_test"])


@pytest.mark.parametrize("family, data, args", [
    ("resnet18", "digits", {}), ("pinn-mlp", "convection", {"collocation": 64})])
def test_hessian_columns_do_not_depend_on_the_micro_batch(family, data, args):
    def row(micro: int) -> dict:
        hessian = {"batches": 1, "batch_size": 8, "max_iter": 4, "micro_batch_size": micro}
        spec = parse_spec({**TINY_SPEC, "architecture": {"family": family, "width": 2},
                           "data": {"name": data, "args": args},
                           "metrics": {"hessian": hessian, "spectra": False}})
        model = build_model(spec, spec.cells()[0], bundle, 0)
        return model_metrics(model, Objective(bundle), spec.metrics, seed=0)

    bundle = datasets.load(data, args=args)
    whole, streamed = row(8 * 10), row(5)  # one graph for all 8 samples vs 5 (1 per probe)
    assert streamed.keys() == whole.keys()
    for key, value in whole.items():
        assert streamed[key] == pytest.approx(value, rel=1e-4), key
