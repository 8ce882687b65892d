"""Hessian metrics against exact references: closed forms and the full Hessian of tiny nets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from zoo.metrics import hessian_memory
from zoo.metrics.hessian import (_lanczos_top, hessian_vector_product, top_eigenvalue, trace,
                                 vector_limits)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(out.squeeze(-1), y)


def _regression(n: int = 100, d: int = 20):
    g = _gen(1)
    x = torch.randn(n, d, generator=g, dtype=F64) * torch.linspace(0.2, 2.0, d, dtype=F64)
    y = torch.randn(n, generator=g, dtype=F64)
    model = nn.Linear(d, 1, bias=False).to(F64)
    return model, x, y, (2 * x.T @ x / n).numpy()


def _full_hessian(model: nn.Module, loss_fn, x, y) -> np.ndarray:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p.detach() for n, p in model.named_parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        pieces = [c.view_as(p) for c, p in zip(torch.split(flat, sizes), params)]
        return loss_fn(functional_call(model, dict(zip(names, pieces)), (x,)), y)

    flat = torch.cat([p.reshape(-1) for p in params])
    return torch.autograd.functional.hessian(loss_of, flat).numpy()


def test_linear_regression_top_eigenvalue_is_exact() -> None:
    model, x, y, h = _regression()
    expected = np.linalg.eigvalsh(h)[-1]
    got = top_eigenvalue(model, _mse, [(x, y)], tol=1e-10, generator=_gen())
    assert got == pytest.approx(expected, rel=1e-6)
    loose = top_eigenvalue(model, _mse, [(x, y)], generator=_gen())  # default tol 1e-3
    assert loose == pytest.approx(expected, rel=1e-4)


def test_linear_regression_trace_within_four_standard_errors() -> None:
    model, x, y, h = _regression()
    estimate, stderr = trace(model, _mse, [(x, y)], max_iter=200, generator=_gen())
    assert stderr > 0
    assert abs(estimate - np.trace(h)) < 4 * stderr


def test_several_batches_equal_the_full_set_for_a_mean_loss() -> None:
    model, x, y, h = _regression()
    parts = [(x[:30], y[:30]), (x[30:80], y[30:80]), (x[80:], y[80:])]
    v = torch.randn(x.shape[1], generator=_gen(2), dtype=F64)
    full = hessian_vector_product(model, _mse, [(x, y)], v)
    split = hessian_vector_product(model, _mse, parts, v)
    torch.testing.assert_close(split, full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(full, torch.from_numpy(h) @ v, rtol=1e-12, atol=1e-12)
    a = top_eigenvalue(model, _mse, parts, tol=1e-10, generator=_gen())
    assert a == pytest.approx(np.linalg.eigvalsh(h)[-1], rel=1e-9)


def test_softmax_regression_trace_matches_closed_form() -> None:
    g = _gen(3)
    n, d, k = 200, 6, 4
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randint(0, k, (n,), generator=g)
    model = nn.Linear(d, k).to(F64)
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)
    exact = float(((p * (1 - p)).sum(1) * ((x**2).sum(1) + 1)).mean())  # +1: the bias
    ce = nn.functional.cross_entropy
    estimate, stderr = trace(model, ce, [(x, y)], generator=_gen())
    assert abs(estimate - exact) < 4 * stderr
    many, many_err = trace(model, ce, [(x, y)], max_iter=2000, tol=0.0, generator=_gen(4))
    assert abs(many - exact) < 4 * many_err
    assert many == pytest.approx(exact, rel=0.03)
    assert np.trace(_full_hessian(model, ce, x, y)) == pytest.approx(exact, rel=1e-12)


def _tiny_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(F64)
    g = _gen(5)
    x = torch.randn(40, 3, generator=g, dtype=F64)
    y = torch.randint(0, 2, (40,), generator=g)
    return model, x, y


def test_tiny_mlp_matches_its_full_hessian() -> None:
    model, x, y = _tiny_mlp()
    ce = nn.functional.cross_entropy
    h = _full_hessian(model, ce, x, y)
    batches = [(x[:16], y[:16]), (x[16:32], y[16:32]), (x[32:], y[32:])]
    top = top_eigenvalue(model, ce, batches, generator=_gen())
    assert top == pytest.approx(np.linalg.eigvalsh(h)[-1], rel=1e-4)
    estimate, stderr = trace(model, ce, batches, max_iter=300, generator=_gen())
    assert abs(estimate - np.trace(h)) < 4 * stderr


class _Quadratic(nn.Module):
    """Loss 0.5 wᵀAw, ignoring the inputs."""

    def __init__(self, eigenvalues: list[float]) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=_gen(6), dtype=F64))
        self.register_buffer("a", q @ torch.diag(torch.tensor(eigenvalues, dtype=F64)) @ q.T)
        self.w = nn.Parameter(torch.ones(len(eigenvalues), dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.w @ self.a @ self.w


def _identity_loss(out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return out


def test_indefinite_quadratic_gives_the_largest_algebraic_eigenvalue() -> None:
    eigenvalues = [1.0, -3.0, -2.0, 0.5, -0.25, 0.9, -1.5, 0.1]
    model = _Quadratic(eigenvalues)
    batch = [(torch.zeros(1, 1, dtype=F64), torch.zeros(1, dtype=F64))]
    assert top_eigenvalue(model, _identity_loss, batch, generator=_gen()) == pytest.approx(1.0, rel=1e-6)
    estimate, _ = trace(model, _identity_loss, batch, max_iter=500, tol=0.0, generator=_gen())
    assert estimate == pytest.approx(sum(eigenvalues), abs=0.5)


def test_mode_is_restored_and_frozen_parameters_are_excluded() -> None:
    model, x, y = _tiny_mlp()
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad_(False)
    model.train()
    ce = nn.functional.cross_entropy
    h = _full_hessian(model, ce, x, y)
    assert h.shape == (12, 12)  # only the second layer: 5*2 weights + 2 biases
    top = top_eigenvalue(model, ce, [(x, y)], generator=_gen(), device="cpu")
    assert top == pytest.approx(np.linalg.eigvalsh(h)[-1], rel=1e-4)
    assert model.training


def test_same_generator_seed_gives_the_same_numbers_and_float32_inputs_are_cast() -> None:
    model, x, y = _tiny_mlp()
    ce = nn.functional.cross_entropy
    x32 = x.float()
    first = trace(model, ce, [(x32, y)], generator=_gen(9))
    second = trace(model, ce, [(x32.double(), y)], generator=_gen(9))
    assert first == second
    assert isinstance(first[0], float) and isinstance(first[1], float)


def test_a_single_probe_has_no_standard_error() -> None:
    model, x, y = _tiny_mlp()
    estimate, stderr = trace(model, nn.functional.cross_entropy, [(x, y)], max_iter=1, generator=_gen())
    assert np.isfinite(estimate) and np.isnan(stderr)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_iter": 0}, "max_iter must be an int >= 1, got 0"),
        ({"max_iter": 2.5}, "max_iter must be an int >= 1, got 2.5"),
        ({"tol": -1.0}, "tol must be a finite number >= 0, got -1.0"),
        ({"tol": float("nan")}, "tol must be a finite number >= 0, got nan"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict, match: str) -> None:
    model, x, y = _tiny_mlp()
    for fn in (top_eigenvalue, trace):
        with pytest.raises(ValueError, match=match):
            fn(model, nn.functional.cross_entropy, [(x, y)], **kwargs)


def test_empty_batches_and_frozen_models_are_rejected() -> None:
    model, x, y = _tiny_mlp()
    with pytest.raises(ValueError, match="batches must hold at least one"):
        top_eigenvalue(model, nn.functional.cross_entropy, [])
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters that require grad"):
        trace(model, nn.functional.cross_entropy, [(x, y)])


@pytest.mark.parametrize("micro", [1, 7, 16, 40])
def test_micro_batches_give_the_same_products_and_estimates(micro: int) -> None:
    model, x, y = _tiny_mlp()
    ce = nn.functional.cross_entropy
    h = torch.from_numpy(_full_hessian(model, ce, x, y))
    batches = [(x[:16], y[:16]), (x[16:32], y[16:32]), (x[32:], y[32:])]
    v = torch.randn(2, h.shape[0], generator=_gen(7), dtype=F64)
    streamed = hessian_vector_product(model, ce, batches, v, micro_batch_size=micro)
    torch.testing.assert_close(streamed, v @ h, rtol=1e-12, atol=1e-12)
    one = hessian_vector_product(model, ce, batches, v[0], micro_batch_size=micro)
    torch.testing.assert_close(one, h @ v[0], rtol=1e-12, atol=1e-12)
    whole_top = top_eigenvalue(model, ce, batches, generator=_gen())
    top = top_eigenvalue(model, ce, batches, generator=_gen(), micro_batch_size=micro)
    assert top == pytest.approx(whole_top, rel=1e-12)
    whole_trace = trace(model, ce, batches, max_iter=30, generator=_gen())
    streamed_trace = trace(model, ce, batches, max_iter=30, generator=_gen(),
                           micro_batch_size=micro)
    assert streamed_trace == pytest.approx(whole_trace, rel=1e-12)


def test_micro_batches_of_unmergeable_batches_are_weighted_by_size() -> None:
    model = _Quadratic([1.0, 2.0, 3.0])
    batch = [(torch.zeros(5, 1, dtype=F64), torch.zeros(5, dtype=F64)),
             (torch.zeros(3, 2, dtype=F64), torch.zeros(3, dtype=F64))]
    v = torch.randn(3, generator=_gen(8), dtype=F64)
    expected = hessian_vector_product(model, _identity_loss, batch, v)
    got = hessian_vector_product(model, _identity_loss, batch, v, micro_batch_size=2)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(got, model.a @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_bad_micro_batch_sizes_are_rejected(bad) -> None:
    model, x, y = _tiny_mlp()
    match = f"micro_batch_size must be an int >= 1 or None, got {bad!r}"
    for fn in (top_eigenvalue, trace):
        with pytest.raises(ValueError, match=match):
            fn(model, nn.functional.cross_entropy, [(x, y)], micro_batch_size=bad)
    with pytest.raises(ValueError, match=match):
        hessian_vector_product(model, nn.functional.cross_entropy, [(x, y)], x.new_zeros(27),
                               micro_batch_size=bad)


@pytest.mark.parametrize("max_basis", [2, 3, 5])
def test_a_restarted_lanczos_finds_the_top_eigenvalue_of_the_full_hessian(max_basis) -> None:
    model, x, y = _tiny_mlp()
    ce = nn.functional.cross_entropy
    h = _full_hessian(model, ce, x, y)  # 32 x 32
    expected = np.linalg.eigvalsh(h)[-1]
    top = top_eigenvalue(model, ce, [(x, y)], tol=1e-10, max_iter=500, generator=_gen(),
                         max_basis=max_basis)
    assert top == pytest.approx(expected, rel=1e-9)


def _gapped_matrix(n: int = 60) -> tuple[torch.Tensor, float]:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=_gen(10), dtype=F64))
    eigenvalues = torch.linspace(-2.0, 1.0, n, dtype=F64)
    eigenvalues[-1] = 3.0
    return q @ torch.diag(eigenvalues) @ q.T, 3.0


@pytest.mark.parametrize("max_basis", [2, 3, 5])
def test_a_restarted_lanczos_keeps_at_most_max_basis_vectors(max_basis) -> None:
    """Counted at every product: the vectors of the problem's size alive (the basis)."""
    import gc

    a, expected = _gapped_matrix()
    alive: list[int] = []

    def hvp(v: torch.Tensor) -> torch.Tensor:
        alive.append(sum(type(o) is torch.Tensor and o.shape == (60,)
                         for o in gc.get_objects()))
        return a @ v

    start = torch.randn(60, generator=_gen(11), dtype=F64)
    top = _lanczos_top(hvp, start, 500, 1e-12, max_basis)
    assert top == pytest.approx(expected, rel=1e-12)
    assert len(alive) > max_basis  # it restarted
    assert max(alive) == max_basis


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_a_basis_that_is_never_filled_gives_the_unbounded_run_bit_for_bit(dtype) -> None:
    model, x, y = _tiny_mlp()
    model, ce = model.to(dtype), nn.functional.cross_entropy
    for tol in (1e-3, 1e-10):
        free = top_eigenvalue(model, ce, [(x, y)], tol=tol, max_iter=30, generator=_gen())
        assert top_eigenvalue(model, ce, [(x, y)], tol=tol, max_iter=30, generator=_gen(),
                              max_basis=30) == free


@pytest.mark.parametrize("micro", [None, 7])
@pytest.mark.parametrize("probe_block", [1, 3, 10])
def test_the_probe_block_changes_no_probe_and_no_stop(micro, probe_block) -> None:
    model, x, y = _tiny_mlp()
    ce = nn.functional.cross_entropy
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    reference = trace(model, ce, batches, max_iter=37, tol=1e-3, generator=_gen(),
                      micro_batch_size=micro)
    got = trace(model, ce, batches, max_iter=37, tol=1e-3, generator=_gen(),
                micro_batch_size=micro, probe_block=probe_block)
    assert got == pytest.approx(reference, rel=1e-12)
    exact = np.trace(_full_hessian(model, ce, x, y))
    many, error = trace(model, ce, batches, max_iter=400, tol=0.0, generator=_gen(),
                        probe_block=probe_block)
    assert abs(many - exact) < 4 * error


def test_vector_limits_follow_the_budget_and_leave_small_models_unbounded() -> None:
    model, _, _ = _tiny_mlp()  # 32 float64 values: 256 bytes a vector
    assert vector_limits(model, None) == (None, 10)
    assert vector_limits(model, 256 * 1000) == (1000 - hessian_memory.LANCZOS_WORK_VECTORS, 10)
    assert vector_limits(model, 256 * 16) == (10, 2)  # 16 vectors: 16 - 6 basis, (16 - 3) // 5
    assert vector_limits(model, 0) == (2, 1)  # never below a Ritz vector, a residual, a probe
    assert vector_limits(model.float(), 128 * 16) == (10, 2)  # float32: half the bytes


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_basis": 1}, "max_basis must be an int >= 2 or None, got 1"),
    ({"max_basis": 4.0}, "max_basis must be an int >= 2 or None, got 4.0"),
    ({"probe_block": 0}, "probe_block must be an int >= 1, got 0"),
    ({"probe_block": None}, "probe_block must be an int >= 1, got None"),
])
def test_bad_vector_limits_are_rejected(kwargs: dict, match: str) -> None:
    model, x, y = _tiny_mlp()
    fn = top_eigenvalue if "max_basis" in kwargs else trace
    with pytest.raises(ValueError, match=match):
        fn(model, nn.functional.cross_entropy, [(x, y)], **kwargs)
