"""Landscape metrics wired into generation: model, pair and cell columns of a real zoo."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from tests.conftest import TINY_SPEC
from zoo import datasets
from zoo.folder.reader import ZooReader
from zoo.measure import (cka_columns, curve_columns, curves_columns, mixup_inputs, model_metrics,
                         round_steps)
from zoo.metrics.connectivity import projected_limit
from zoo.objective import Objective
from zoo.phases import PHASES
from zoo.specfile import parse_spec
from zoo.train import build_model


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
        assert cell["phase_high_loss"] == 0.2 and cell["phase_cka"] == 0.75
        assert cell["num_pairs"] == 1 and cell["metric_epoch"] == 2
    for pair in pairs:
        assert pair["curve_ts"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert pair["curve_steps"] == 40 * pair["curve_rounds"]
        assert 2 <= pair["curve_rounds"] <= 4 or not pair["mc_converged"]
        assert pair["curve_mc_history"][-1] == pair["mc_train_error"]
        assert pair["curve_bn_samples"] == 4000  # the full mnist1d train set
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


def test_hessian_columns_follow_the_vector_budget(digits_pair):
    """A budget the model's vectors fit in gives the unbounded columns bit for bit; the
    smallest budget (a 2-vector basis, one probe at a time) the same to tolerance."""
    spec, bundle, model, _ = digits_pair

    def row(budget: float) -> dict:
        hessian = {"batches": 2, "batch_size": 16, "max_iter": 60, "tol": 1e-4,
                   "vector_memory_gb": budget}
        metrics = parse_spec({**TINY_SPEC, "metrics": {"hessian": hessian,
                                                       "spectra": False}}).metrics
        return model_metrics(copy.deepcopy(model), Objective(bundle), metrics, seed=0)

    default, free, least = row(8.0), row(1e9), row(0.0)
    assert default == free
    for split in ("train", "test"):
        assert least[f"hessian_trace_{split}"] == pytest.approx(
            free[f"hessian_trace_{split}"], rel=1e-5)
        assert least[f"hessian_top_eigenvalue_{split}"] == pytest.approx(
            free[f"hessian_top_eigenvalue_{split}"], rel=1e-3)


@pytest.fixture(scope="module")
def trained_pair(digits_pair):
    """Two seeds of the digits MLP after 60 full-batch SGD steps (a curve then has shape)."""
    spec, bundle, a, b = digits_pair
    trained = []
    for model in (a, b):
        model = copy.deepcopy(model).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(60):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(bundle.train[0]), bundle.train[1]).backward()
            optimizer.step()
        trained.append(model.eval())
    return spec, bundle, *trained


def _with_curve(spec, **curve):
    metrics = dataclasses.replace(spec.metrics, curve=dataclasses.replace(spec.metrics.curve,
                                                                          **curve))
    return metrics


@pytest.mark.parametrize("tolerance, max_rounds, rounds, converged", [
    (1e-12, 3, 3, False),  # never within 1e-12 points: stops at max_rounds, says so
    (1000.0, 2, 2, False),  # two rounds give no ratio: the drift is unbounded
    (1000.0, 1, 1, False),  # one round cannot show convergence
])
def test_curve_fit_continues_until_mc_converges(trained_pair, tolerance, max_rounds, rounds,
                                                converged):
    spec, bundle, a, b = trained_pair
    metrics = _with_curve(spec, steps=15, tolerance=tolerance, max_rounds=max_rounds,
                          bn_samples=100)
    row = curve_columns(a, b, Objective(bundle), metrics, seed=3)
    assert row["curve_rounds"] == rounds and len(row["curve_mc_history"]) == rounds
    assert row["curve_steps"] == 15 * rounds
    assert row["mc_converged"] is converged
    assert row["curve_tolerance"] == tolerance
    limit, drift = projected_limit(row["curve_mc_history"])
    assert row["mc_drift"] == drift or math.isnan(drift) and math.isnan(row["mc_drift"])
    ends = (row["curve_train_error"][0] + row["curve_train_error"][-1]) / 2
    assert row["mc_projected"] == min(limit, ends) or math.isnan(limit)
    assert row["mc_train_error"] == row["curve_mc_history"][-1]  # the same final curve
    assert row["curve_bn_samples"] == 128  # 100 samples rounded up to whole batches


def test_a_cells_curves_fitted_together_equal_each_fitted_alone(trained_pair):
    spec, bundle, a, b = trained_pair
    third = copy.deepcopy(a)
    with torch.no_grad():
        for p in third.parameters():
            p.add_(0.05 * torch.sin(torch.arange(p.numel(), dtype=p.dtype)).reshape(p.shape))
    pairs, seeds = [(a, b), (a, third), (b, third)], [3, 4, 5]
    # a tolerance the pairs meet at different rounds, so each stops on its own
    metrics = _with_curve(spec, steps=8, tolerance=0.5, max_rounds=4, bn_samples=100)
    objective = Objective(bundle)
    together = curves_columns(pairs, objective, metrics, seeds)
    for (x, y), seed, row in zip(pairs, seeds, together):
        alone = curve_columns(x, y, objective, metrics, seed)
        assert row["curve_rounds"] == alone["curve_rounds"]
        for key in ("mc_train_error", "mc_test_loss", "mc_projected", "linear_barrier_train_loss"):
            assert row[key] == pytest.approx(alone[key], abs=1e-4, nan_ok=True), key
        assert row["curve_train_loss"] == pytest.approx(alone["curve_train_loss"], rel=1e-5)


def test_rounds_continue_one_fit_deterministically(trained_pair):
    spec, bundle, a, b = trained_pair
    metrics = _with_curve(spec, steps=10, tolerance=1e-12, max_rounds=2)
    first = curve_columns(a, b, Objective(bundle), metrics, seed=5)
    again = curve_columns(a, b, Objective(bundle), metrics, seed=5)
    assert first["curve_mc_history"] == again["curve_mc_history"]
    one = curve_columns(a, b, Objective(bundle), _with_curve(spec, steps=10, max_rounds=1),
                        seed=5)
    assert one["curve_mc_history"][0] == first["curve_mc_history"][0]  # round 2 continues it


def test_round_length_defaults_to_ten_epochs_of_the_zoo_data():
    spec = parse_spec(TINY_SPEC)
    curve = dataclasses.replace(spec.metrics.curve, steps=None, batch_size=128)
    assert round_steps(curve, 4000) == 10 * 32  # ceil(4000 / 128) = 32 batches an epoch
    assert round_steps(dataclasses.replace(curve, epochs=2), 1797) == 2 * 15
    assert round_steps(dataclasses.replace(curve, steps=7), 4000) == 7


def _yang_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s gram-matrix linear CKA (biased), as Yang et al.'s code calls it."""
    def centre(gram):
        means = gram.mean(0)
        means -= means.mean() / 2
        return gram - means[:, None] - means[None, :]
    gx, gy = centre(x @ x.T), centre(y @ y.T)
    return float(gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy)))


def test_cka_mixup_matches_a_direct_implementation_of_yang_et_al(digits_pair):
    spec, bundle, a, b = digits_pair
    row = cka_columns(a, b, Objective(bundle), spec.metrics)
    settings = spec.metrics.similarity
    assert (settings.mixup_batches, settings.mixup_alpha) == (6, 16.0)
    # direct: the same fixed probe batches, one lambda ~ Beta(16, 16) and one permutation per
    # batch, softmax outputs of all batches pooled into one CKA
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(bundle.num_train, generator=generator)[:6 * settings.batch_size]
    rng = np.random.default_rng(0)
    outputs_a, outputs_b = [], []
    for chunk in index.split(settings.batch_size):
        x = bundle.train[0][chunk].numpy().astype(np.float64)
        lam = rng.beta(16.0, 16.0)
        mixed = lam * x + (1 - lam) * x[rng.permutation(len(x))]
        inputs = torch.as_tensor(mixed, dtype=torch.float32)
        with torch.no_grad():
            outputs_a.append(torch.softmax(a.eval()(inputs), -1).double().numpy())
            outputs_b.append(torch.softmax(b.eval()(inputs), -1).double().numpy())
    expected = _yang_cka(np.concatenate(outputs_a), np.concatenate(outputs_b))
    assert row["cka_mixup"] == pytest.approx(expected, abs=1e-6)
    assert row["cka_mixup"] != pytest.approx(1.0, abs=1e-3)  # two different seeds


def test_mixup_draws_one_lambda_per_batch_from_beta_16_16():
    batches = [torch.zeros(4, 3), torch.ones(4, 3) * torch.arange(4.0)[:, None]]
    mixed = mixup_inputs(batches, 16.0, seed=1)
    rng = np.random.default_rng(1)
    lam0, perm0 = rng.beta(16, 16), rng.permutation(4)
    lam1, perm1 = rng.beta(16, 16), rng.permutation(4)
    assert torch.equal(mixed[0], torch.zeros(4, 3))
    expected = lam1 * batches[1] + (1 - lam1) * batches[1][torch.as_tensor(perm1)]
    torch.testing.assert_close(mixed[1], expected, rtol=0, atol=0)
    draws = np.random.default_rng(2).beta(16, 16, 10_000)
    assert draws.mean() == pytest.approx(0.5, abs=0.01) and draws.std() < 0.1


@pytest.mark.parametrize("metrics, expected", [
    ({"curve": {"enabled": False}}, (None, None)),  # mc not measured: no label, not a barrier
    ({"similarity": {"enabled": False}, "curve": {"steps": 5, "max_rounds": 2}}, "high"),
])
def test_a_cell_whose_needed_metric_is_off_gets_no_label(metrics, expected):
    from zoo.cell import run_cell

    body = {**TINY_SPEC, "grid": {"load": {"axis": "width", "values": [4]},
                                  "temperature": {"axis": "batch_size", "values": [512]}},
            "training": {"epochs": 1, "learning_rate": 0.05},
            "metrics": {"epochs": ["last"], "hessian": {"enabled": False}, **metrics}}
    spec = parse_spec(body)
    bundle = datasets.load("mnist1d")
    row = run_cell(spec, spec.jobs(bundle.fingerprint()), bundle).cells[0]
    assert row["train_loss_mean"] > row["phase_high_loss"]  # one epoch at batch 512: high loss
    if expected == "high":  # CKA is off, but a high-loss cell does not need it
        assert row["cka_mean"] is None and row["phase"] in ("I", "II")
        assert row["num_pairs_converged"] in (0, 1)
    else:
        assert row["mc_train_error_mean"] is None
        assert (row["phase"], row["phase_confident"]) == expected
