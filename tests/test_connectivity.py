"""Mode connectivity, Bezier curves and linear barriers on hand-made cases and tiny real nets."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from zoo.metrics.connectivity import (
    BezierCurve,
    evaluate_curve,
    fit_bezier,
    fit_bezier_stacked,
    linear_barrier,
    mode_connectivity,
    projected_limit,
    recondition_batchnorm,
)

TS = [0.0, 0.25, 0.5, 0.75, 1.0]
CE = nn.functional.cross_entropy


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny nets run far faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("values", "expected_mc", "expected_t"),
    [
        ([1.0, 1.5, 3.0, 1.2, 1.0], -2.0, 0.5),  # a bump: barrier
        ([2.0, 1.0, 0.5, 1.5, 2.0], 1.5, 0.5),  # a dip: under-trained ends
        ([1.0, 1.0, 1.0, 1.0, 1.0], 0.0, 0.0),  # flat: ties go to the first t
        ([0.0, 1.0, 3.0, 4.5, 2.0], -3.5, 0.75),  # uneven ends, peak off-centre
        ([0.0, 1.0, 1.0, 1.0, 10.0], 5.0, 0.0),  # the ends themselves deviate most
        ([1.0, math.nan, 1.0, 1.0, 1.0], -math.inf, 0.25),  # a diverged point
    ],
)
def test_mode_connectivity_on_hand_made_curves(values, expected_mc, expected_t) -> None:
    mc, t_star = mode_connectivity(values, TS)
    assert mc == expected_mc
    assert t_star == expected_t


def test_mode_connectivity_with_non_finite_ends_is_nan() -> None:
    mc, t_star = mode_connectivity([math.inf, 1.0, 2.0], [0.0, 0.5, 1.0])
    assert math.isnan(mc) and math.isnan(t_star)


@pytest.mark.parametrize(
    ("values", "ts", "match"),
    [
        ([1.0, 2.0], [0.0, 0.5, 1.0], "same length >= 2, got 2 and 3"),
        ([1.0], [0.0], "same length >= 2, got 1 and 1"),
        ([1.0, 2.0, 3.0], [0.1, 0.5, 1.0], "ts must start at 0 and end at 1, got 0.1 ... 1.0"),
    ],
)
def test_mode_connectivity_rejects_bad_curves(values, ts, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mode_connectivity(values, ts)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16
    return x, torch.tensor(data.target)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def _epoch(x: torch.Tensor, y: torch.Tensor):
    def batches(g: torch.Generator | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(x), generator=g)
        return [(x[order[i : i + 128]], y[order[i : i + 128]]) for i in range(0, len(x), 128)]

    return batches


@pytest.fixture(scope="module")
def two_models(digits) -> tuple[nn.Module, nn.Module]:
    x, y = digits
    models = []
    for seed in (0, 1):
        model = _mlp(seed)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            for xb, yb in _epoch(x, y)(torch.Generator().manual_seed(seed)):
                opt.zero_grad()
                CE(model(xb), yb).backward()
                opt.step()
        models.append(model.eval())
    return models[0], models[1]


def _loss_on(x: torch.Tensor, y: torch.Tensor):
    def evaluate(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            out = model(x)
        return {"loss": float(CE(out, y)), "error": float((out.argmax(1) != y).float().mean() * 100)}

    return evaluate


def test_fitted_curve_keeps_its_ends_and_beats_the_straight_line(digits, two_models) -> None:
    x, y = digits
    a, b = two_models
    before = {k: v.clone() for k, v in a.state_dict().items()}
    curve = fit_bezier(a, b, CE, _epoch(x, y), steps=150, generator=torch.Generator().manual_seed(0))
    for name, p in a.named_parameters():
        assert torch.equal(curve.start[name], p) and torch.equal(before[name], p)
    for name, p in b.named_parameters():
        assert torch.equal(curve.end[name], p)
    assert torch.equal(curve.model_at(0.0)(x), a(x))
    assert torch.equal(curve.model_at(1.0)(x), b(x))
    evaluate = _loss_on(x, y)
    on_curve = evaluate_curve(curve, TS, evaluate)
    straight = evaluate_curve(_segment(a, b), TS, evaluate)["loss"]
    assert on_curve["loss"][2] < straight[2]
    assert on_curve["loss"][0] == straight[0] and on_curve["loss"][-1] == straight[-1]
    assert set(on_curve) == {"loss", "error"} and len(on_curve["error"]) == 5


def test_curves_share_their_ends_but_hand_out_models_of_their_own(digits, two_models) -> None:
    x, y = digits
    a, b = two_models
    before = [v.clone() for m in (a, b) for v in m.state_dict().values()]
    single = fit_bezier(a, b, CE, _epoch(x, y), steps=3, generator=torch.Generator().manual_seed(0))
    stacked = fit_bezier_stacked([(a, b), (b, a)], CE, _epoch(x, y),
                                 [torch.Generator().manual_seed(s) for s in (0, 1)], steps=3)
    for curve, (w1, w2) in ((single, (a, b)), (stacked[0], (a, b)), (stacked[1], (b, a))):
        for name, p in w1.named_parameters():  # no copies of the ends, nor of the module's
            assert curve.start[name].data_ptr() == p.data_ptr()
            assert curve.architecture.get_parameter(name).data_ptr() == p.data_ptr()
            assert curve.end[name].data_ptr() == w2.get_parameter(name).data_ptr()
        for t in (0.0, 0.5, 1.0):
            with torch.no_grad():
                for p in curve.model_at(t).parameters():
                    p.add_(1.0)  # a caller changing its model changes neither curve nor models
        assert torch.equal(curve.model_at(0.0)(x), w1(x))
    thetas = [c.control["0.weight"].untyped_storage().data_ptr() for c in stacked]
    assert thetas[0] != thetas[1]  # each θ its own: one curve does not pin its cellmates'
    after = [v for m in (a, b) for v in m.state_dict().values()]
    assert all(torch.equal(v, w) for v, w in zip(after, before, strict=True))


def test_fit_is_repeatable_and_accepts_a_plain_list_of_batches(digits, two_models) -> None:
    x, y = digits
    a, b = two_models
    batches = _epoch(x, y)(torch.Generator().manual_seed(3))[:4]
    curves = [
        fit_bezier(a, b, CE, batches, steps=10, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    for name, theta in curves[0].control.items():
        assert torch.equal(theta, curves[1].control[name])
        assert not theta.requires_grad
    midpoint = (curves[0].start["0.weight"] + curves[0].end["0.weight"]) / 2
    assert not torch.equal(curves[0].control["0.weight"], midpoint)


def test_fit_rejects_bad_arguments(two_models) -> None:
    a, b = two_models
    with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
        fit_bezier(a, b, CE, [], steps=0)
    with pytest.raises(ValueError, match="train_batches yielded no batches"):
        fit_bezier(a, b, CE, [], steps=1)
    with pytest.raises(ValueError, match=r"differ in parameters \(name, shape\)"):
        fit_bezier(a, nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)), CE, [], steps=1)


class _BatchNormNet(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(4, 6).double()
        self.drop = nn.Dropout(0.5)  # must stay off while statistics are re-estimated
        self.norm = nn.BatchNorm1d(6).double()
        self.head = nn.Linear(6, 3).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.drop(self.linear(x)))))


def test_batchnorm_statistics_are_re_estimated_not_blended() -> None:
    a, b = _BatchNormNet(0), _BatchNormNet(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g, dtype=torch.float64) * 3 + 1
    y = torch.randint(0, 3, (96,), generator=g)
    train = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]
    curve = fit_bezier(a, b, CE, train, steps=20, lr=0.01, generator=g)
    model = curve.model_at(0.3, bn_batches=train)
    assert not model.training
    with torch.no_grad():
        pre = [model.linear(xb) for xb, _ in train]
    mean = torch.stack([p.mean(0) for p in pre]).mean(0)
    var = torch.stack([p.var(0, unbiased=True) for p in pre]).mean(0)
    torch.testing.assert_close(model.norm.running_mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.norm.running_var, var, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.norm.running_mean, model.linear(x).mean(0).detach())
    assert model.norm.momentum == 0.1  # the layer's own setting is put back
    with pytest.raises(ValueError, match="pass bn_batches"):
        curve.model_at(0.3)
    with pytest.raises(ValueError, match="got no batches"):
        recondition_batchnorm(model, [])


def test_recondition_accepts_bare_inputs_and_leaves_plain_models_alone() -> None:
    net = _BatchNormNet(2)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    recondition_batchnorm(net, [x.float()])  # cast to the model's dtype
    torch.testing.assert_close(net.norm.running_mean, net.linear(x).mean(0).detach())
    plain = nn.Linear(2, 2)
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    assert recondition_batchnorm(plain, []) is plain
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in state.items())


def _scalar(w: float) -> nn.Module:
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(w)
    return model


def _double_well(model: nn.Module) -> dict[str, float]:
    w = float(model.weight.detach())
    return {"loss": (w * w - 1) ** 2, "w": w}


def _segment(a: nn.Module, b: nn.Module) -> BezierCurve:
    """The straight segment as a Bezier with its control point at the midpoint (as zoo.measure)."""
    start, end = dict(a.named_parameters()), dict(b.named_parameters())
    start = {n: p.detach() for n, p in start.items()}
    end = {n: p.detach() for n, p in end.items()}
    return BezierCurve(a, start, {n: (start[n] + end[n]) / 2 for n in start}, end)


def test_linear_barrier_hand_checked_on_a_double_well() -> None:
    values = evaluate_curve(_segment(_scalar(-1.0), _scalar(1.0)), TS, _double_well)
    assert values["loss"] == pytest.approx([0.0, 0.5625, 1.0, 0.5625, 0.0])  # w = 2α − 1
    assert linear_barrier(values["loss"], TS) == pytest.approx(1.0)
    assert linear_barrier([0.5625] * 3, (0, 0.3, 1)) == 0.0
    assert linear_barrier([0.0, 1.0, 2.0], (0, 0.5, 1)) == 0.0  # linear in α: no barrier


def test_linear_barrier_rejects_alphas_without_both_ends() -> None:
    with pytest.raises(ValueError, match=r"alphas must run from 0 to 1 .*got \[0.0, 0.5\]"):
        linear_barrier([1.0, 2.0], (0, 0.5))


def test_evaluate_curve_on_a_hand_made_curve() -> None:
    curve = BezierCurve(
        architecture=_scalar(0.0),
        start={"weight": torch.tensor([[-1.0]], dtype=torch.float64)},
        control={"weight": torch.tensor([[0.0]], dtype=torch.float64)},
        end={"weight": torch.tensor([[1.0]], dtype=torch.float64)},
    )
    result = evaluate_curve(curve, TS, _double_well)
    assert result["w"] == [-1.0, -0.5, 0.0, 0.5, 1.0]  # φ(t) = 2t − 1 here
    assert mode_connectivity(result["loss"], TS) == (-1.0, 0.5)
    with pytest.raises(ValueError, match="evaluate returned keys"):
        keys = iter([{"loss": 1.0}, {"error": 2.0}])
        evaluate_curve(curve, [0.0, 1.0], lambda m: next(keys))


def test_stacked_fit_equals_one_by_one_in_float64(digits) -> None:
    x, y = (digits[0][:300].double(), digits[1][:300])  # 128-batches: the last has 44
    models = [_mlp(seed).double() for seed in (0, 1, 2)]
    pairs = [(models[0], models[1]), (models[0], models[2]), (models[1], models[2])]
    seeds = (5, 6, 7)
    start = {n: p.detach() + 0.01 for n, p in models[0].named_parameters()}  # a given θ
    controls = [None, start, None]
    stacked = fit_bezier_stacked(pairs, CE, _epoch(x, y),
                                 [torch.Generator().manual_seed(s) for s in seeds], steps=7,
                                 controls=controls)
    for (a, b), seed, control, curve in zip(pairs, seeds, controls, stacked):
        alone = fit_bezier(a, b, CE, _epoch(x, y), steps=7, control=control,
                           generator=torch.Generator().manual_seed(seed))
        for name, theta in alone.control.items():
            torch.testing.assert_close(curve.control[name], theta, rtol=1e-12, atol=1e-12)
            assert not torch.equal(theta, (alone.start[name] + alone.end[name]) / 2)
            assert torch.equal(curve.start[name], alone.start[name])


def test_stacked_fit_refuses_batchnorm_and_unpaired_generators(two_models) -> None:
    a, b = two_models
    with pytest.raises(ValueError, match="one generator per pair"):
        fit_bezier_stacked([(a, b)], CE, [], [], steps=1)
    norm = nn.Sequential(nn.Linear(64, 4), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="BatchNorm or dropout"):
        fit_bezier_stacked([(norm, norm)], CE, [], [torch.Generator()], steps=1)


@pytest.mark.parametrize("history, limit, drift", [
    ([1.0, 3.0, 4.0], 5.0, 1.0),            # steps 2, 1: q = 1/2, one more step's worth left
    ([-8.0, -4.0, -3.0], -8 / 3, 1 / 3),    # steps 4, 1: q = 1/4
    ([0.0, -2.0, -2.5, -2.75], -3.0, -0.25),  # only the last three rounds count
    ([2.0, 2.0], 2.0, 0.0),                 # no step: nothing left
    ([1.0, 2.0], math.inf, math.inf),       # two rounds: no ratio, unbounded upward
    ([1.0, 2.0, 3.0], math.inf, math.inf),  # a straight line never converges
    ([1.0, 2.0, 1.5], -math.inf, -math.inf),  # oscillating: unbounded, last step's way
    ([1.0], math.nan, math.nan),
    ([1.0, math.nan, 2.0], math.nan, math.nan),
])
def test_projected_limit_of_synthetic_histories(history, limit, drift) -> None:
    got = projected_limit(history)
    assert got == pytest.approx((limit, drift), nan_ok=True)
