"""Hessian of a model's mean loss over a fixed set of batches: top eigenvalue and trace.

The loss is the full-set mean, L(w) = sum_b (n_b / N) loss_fn(model(x_b), y_b), so for a
mean-reduced `loss_fn` the multi-batch Hessian equals the full-set Hessian. Weight decay is not
part of it. The model is evaluated in eval mode (its mode is restored afterwards); parameters that
do not require grad are held fixed and excluded.

Hessian-vector products use double backward (`torch.autograd.grad` with `create_graph=True`) on
detached copies of the parameters passed through `torch.func.functional_call`, accumulated over
micro-batches (`micro_batch_size`), so memory is set by a micro-batch, not by the probe set.
Measured on CPU (2 threads, MLP 40-w-w-10, 640 samples in 10 batches, float32): width 32 —
double backward 4.3 ms/HVP, torch.func jvp-of-grad 12.4 ms, vjp-of-grad 7.2 ms; width 256 —
9.5, 32.3 and 92.9 ms.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
Hvp = Callable[[Tensor], Tensor]

_MIN_PROBES = 10  # Hutchinson probes drawn before the tolerance rule may stop
_PROBE_BLOCK = 10  # probes multiplied at once (batched backward); the stop rule is unchanged


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    vector: Tensor,
    *,
    micro_batch_size: int | None = None,
) -> Tensor:
    """One product H v of the mean-loss Hessian with a flat vector, in the model's current mode.

    Args:
        model: the network; only parameters with requires_grad take part, in `named_parameters`
            order.
        loss_fn: (outputs, targets) -> mean-reduced scalar loss.
        batches: (inputs, targets) pairs, already on the model's device and dtype.
        vector: (P,) flat vector, P = number of trainable parameter entries; or (K, P) for K
            products at once.
        micro_batch_size: most samples differentiated at once (None: all of them).
    Returns:
        (P,) tensor H v, or (K, P).
    """
    _check_micro_batch(micro_batch_size)
    return _GradientGraph(model, loss_fn, batches, micro_batch_size).product(vector)


class _GradientGraph:
    """Hessian-vector products of the mean loss, accumulated over micro-batches.

    With one micro-batch the gradient's graph is built once and each product is one more
    backward (today's fast path). With several, each product rebuilds one micro-batch's graph
    at a time, so memory is set by the micro-batch, not by the whole probe set. Products of
    several vectors at once go through autograd's batched gradients (vmap over the backward
    pass), which removes the per-product Python and dispatch overhead.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch],
                 micro_batch_size: int | None = None) -> None:
        names, params = _trainable(model)
        self.model, self.loss_fn, self.names = model, loss_fn, names
        self.leaves = [p.detach().requires_grad_(True) for p in params]
        self.parts = _micro_batches(_merged(batches), micro_batch_size)
        total = sum(int(x.shape[0]) for x, _ in self.parts)
        self.weights = [x.shape[0] / total for x, _ in self.parts]
        self.kept = self._gradient(*self.parts[0]) if len(self.parts) == 1 else None

    def _gradient(self, inputs: Tensor, targets: Tensor) -> tuple[list[Tensor], list[int]]:
        """One micro-batch's gradient with its graph, and which leaves it depends on."""
        with sdpa_kernel(SDPBackend.MATH):  # fused attention kernels lack double backward
            out = functional_call(self.model, dict(zip(self.names, self.leaves)), (inputs,))
            grads = torch.autograd.grad(self.loss_fn(out, targets), self.leaves,
                                        create_graph=True, allow_unused=True)
        used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return [grads[i] for i in used], used

    def product(self, vector: Tensor) -> Tensor:
        batched = vector.dim() == 2
        sizes = [p.numel() for p in self.leaves]
        pieces = torch.split(vector, sizes, dim=-1)
        shaped = [piece.reshape(*vector.shape[:-1], *p.shape)
                  for piece, p in zip(pieces, self.leaves)]
        out = torch.zeros_like(vector)
        for weight, part in zip(self.weights, self.parts):
            grads, used = self.kept if self.kept is not None else self._gradient(*part)
            if not used:  # the loss is at most linear in the parameters here: H = 0
                continue
            hv = torch.autograd.grad(grads, self.leaves, [shaped[i] for i in used],
                                     retain_graph=self.kept is not None, allow_unused=True,
                                     is_grads_batched=batched)
            flat = [(_zero_if_none(h, p) if not batched or h is not None else
                     p.new_zeros(vector.shape[0], *p.shape)).reshape(*vector.shape[:-1], -1)
                    for h, p in zip(hv, self.leaves)]
            out.add_(torch.cat(flat, dim=-1), alpha=weight)
            del grads, hv, flat  # free this micro-batch's graph before the next one
        return out


def top_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    micro_batch_size: int | None = None,
) -> float:
    """Largest algebraic eigenvalue of the mean-loss Hessian, by Lanczos.

    Lanczos with full reorthogonalisation (not power iteration, which returns the eigenvalue of
    largest magnitude — negative for some under-trained models). It stops when the residual norm
    of the top Ritz pair, |beta_k s_k|, is at most tol x the largest |Ritz value|, when the
    Krylov space is exhausted, or after max_iter Hessian-vector products.

    Args:
        model, loss_fn, batches: as in `hessian_vector_product`; batches go to `device`.
        max_iter: most Hessian-vector products (each one pass over all batches).
        tol: relative residual tolerance.
        generator: draws the Gaussian start vector.
        device: where to compute; defaults to the model's parameter device.
        micro_batch_size: most samples differentiated at once; memory scales with it, the
            result does not (beyond float rounding). None: all samples at once, the graph
            kept between products (fastest when it fits).
    Returns:
        the eigenvalue, in loss units per parameter unit squared.
    """
    _check_iterations(max_iter, tol, micro_batch_size)
    with _evaluation(model, batches, device) as (work, moved):
        hvp = _GradientGraph(work, loss_fn, moved, micro_batch_size).product
        start = _random_vector(work, generator, rademacher=False)
        return _lanczos_top(hvp, start, max_iter, tol)


def trace(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    micro_batch_size: int | None = None,
) -> tuple[float, float]:
    """Hutchinson estimate of the mean-loss Hessian trace with Rademacher probes.

    Stops when the running mean changes by less than tol (relative) after at least 10 probes,
    or after max_iter probes. A negative running mean does not stop it (unlike PyHessian).

    Args:
        model, loss_fn, batches, device: as in `top_eigenvalue`.
        micro_batch_size: most (sample, probe) pairs differentiated at once: up to 10 probes
            are multiplied together, each over micro_batch_size // probes samples. Memory
            scales with it, the result does not (beyond float rounding). None: 10 probes at
            once over all samples, the graph kept between products.
        max_iter: most probes (each one Hessian-vector product).
        tol: relative change of the running mean that stops it.
        generator: draws the Rademacher probes.
    Returns:
        (estimate, standard error of the mean over probes; NaN with a single probe).
    """
    _check_iterations(max_iter, tol, micro_batch_size)
    with _evaluation(model, batches, device) as (work, moved):
        at_once = _PROBE_BLOCK if micro_batch_size is None else min(_PROBE_BLOCK,
                                                                     micro_batch_size)
        per_probe = None if micro_batch_size is None else micro_batch_size // at_once
        hvp = _GradientGraph(work, loss_fn, moved, per_probe).product
        samples: list[float] = []
        mean, stopped = 0.0, False
        while not stopped and len(samples) < max_iter:
            block = min(at_once, max_iter - len(samples))
            z = torch.stack([_random_vector(work, generator, rademacher=True)
                             for _ in range(block)])
            for value in (z * hvp(z)).sum(dim=1).tolist():  # the rule sees probes one by one
                samples.append(value)
                previous, mean = mean, math.fsum(samples) / len(samples)
                if len(samples) >= _MIN_PROBES and abs(mean - previous) <= tol * abs(previous):
                    stopped = True
                    break
    if len(samples) < 2:
        return mean, math.nan
    var = math.fsum((s - mean) ** 2 for s in samples) / (len(samples) - 1)
    return mean, math.sqrt(var / len(samples))


def _lanczos_top(hvp: Hvp, start: Tensor, max_iter: int, tol: float) -> float:
    """Top Ritz value of a Lanczos run with full reorthogonalisation."""
    basis = [start / start.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    top = math.nan
    breakdown = 1e3 * torch.finfo(start.dtype).eps
    for k in range(min(max_iter, start.numel())):
        w = hvp(basis[k])
        alphas.append(float(torch.dot(w, basis[k])))
        for _ in range(2):  # Gram–Schmidt twice: "twice is enough" (Kahan, Parlett)
            for q in basis:
                w -= torch.dot(q, w) * q
        beta = float(w.norm())
        ritz, vectors = _tridiagonal_eigh(alphas, betas)
        top, scale = float(ritz[-1]), float(ritz.abs().max())
        if beta * abs(float(vectors[-1, -1])) <= tol * scale or beta <= breakdown * scale:
            break
        betas.append(beta)
        basis.append(w / beta)
    return top


def _tridiagonal_eigh(alphas: list[float], betas: list[float]) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the Lanczos tridiagonal, in float64."""
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(t)


@contextmanager
def _evaluation(
    model: nn.Module, batches: Sequence[Batch], device: torch.device | str | None
) -> Iterator[tuple[nn.Module, list[Batch]]]:
    """Model (a copy when `device` differs) in eval mode and batches moved; restores the mode."""
    if not batches:
        raise ValueError("batches must hold at least one (inputs, targets) pair, got none")
    _, params = _trainable(model)
    if not params:
        raise ValueError("model has no parameters that require grad")
    here = params[0].device
    target = here if device is None else torch.device(device)
    work = model if target == here else copy.deepcopy(model).to(target)
    moved = [(_to(x, target, params[0].dtype), _to(y, target, params[0].dtype)) for x, y in batches]
    was_training = model.training
    work.eval()
    try:
        yield work, moved
    finally:
        model.train(was_training)


def _merged(batches: Sequence[Batch]) -> Sequence[Batch]:
    """One batch of all samples when shapes allow: for a mean-reduced loss the size-weighted
    mean over batches equals the mean over their union, and one large graph is faster."""
    if len({(tuple(x.shape[1:]), tuple(y.shape[1:])) for x, y in batches}) != 1:
        return batches
    return [(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))]


def _micro_batches(batches: Sequence[Batch], size: int | None) -> list[Batch]:
    """Each batch cut into pieces of at most `size` samples (None: left whole)."""
    if size is None:
        return list(batches)
    return [(x[i:i + size], y[i:i + size]) for x, y in batches for i in range(0, x.shape[0], size)]


def _trainable(model: nn.Module) -> tuple[list[str], list[Tensor]]:
    pairs = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in pairs], [p for _, p in pairs]


def _random_vector(model: nn.Module, generator: torch.Generator | None, *,
                   rademacher: bool) -> Tensor:
    """A flat (P,) vector on the model's device and dtype, drawn on the generator's device."""
    _, params = _trainable(model)
    size = sum(p.numel() for p in params)
    where = generator.device if generator is not None else torch.device("cpu")
    if rademacher:
        v = torch.randint(0, 2, (size,), generator=generator, device=where) * 2 - 1
    else:
        v = torch.randn(size, generator=generator, device=where, dtype=torch.float64)
    return v.to(device=params[0].device, dtype=params[0].dtype)


def _to(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Move to device; floating tensors take the model's dtype, integer ones keep theirs."""
    return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)


def _zero_if_none(h: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if h is None else h


def _check_iterations(max_iter: int, tol: float, micro_batch_size: int | None) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    _check_micro_batch(micro_batch_size)


def _check_micro_batch(size: int | None) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"micro_batch_size must be an int >= 1 or None, got {size!r}")
