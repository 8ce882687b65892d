"""Mode connectivity: quadratic Bezier curves between two models, the mc score, linear barriers.

Definitions follow Garipov et al. (2018) and Yang et al. (2021): the curve
φ(t) = (1−t)² w1 + 2t(1−t) θ + t² w2 keeps its ends fixed and trains the control point θ;
mc = (L(w1) + L(w2))/2 − L(φ(t*)) at t* = argmax_t |L(φ(t)) − (L(w1) + L(w2))/2|.
BatchNorm running statistics are never blended: wherever a model is built from blended
weights they are re-estimated on given batches (`recondition_batchnorm`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

Batch = tuple[Tensor, Tensor]
Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
Evaluate = Callable[[nn.Module], Mapping[str, float]]
BatchSource = Iterable[Batch] | Callable[[torch.Generator | None], Iterable[Batch]]


def mode_connectivity(values: Sequence[float], ts: Sequence[float]) -> tuple[float, float]:
    """The mc score of a curve from its values (loss or error) at the points ts.

    Args:
        values: (T,) values along the curve; values[0] and values[-1] are the ends.
        ts: (T,) curve positions, ts[0] = 0 and ts[-1] = 1; t* is searched over all of them.
    Returns:
        (mc, t*). mc < 0: a barrier; mc > 0: under-trained ends; ≈ 0: well connected. Ties
        go to the first t. A non-finite interior value (a diverged point) gives (−inf, its t);
        non-finite ends give (nan, nan).
    """
    v, t = [float(x) for x in values], [float(x) for x in ts]
    if len(v) != len(t) or len(v) < 2:
        raise ValueError(f"values and ts must have the same length >= 2, got {len(v)} and {len(t)}")
    if t[0] != 0.0 or t[-1] != 1.0:
        raise ValueError(f"ts must start at 0 and end at 1, got {t[0]} ... {t[-1]}")
    ends = (v[0] + v[-1]) / 2
    if not math.isfinite(ends):
        return math.nan, math.nan
    for value, position in zip(v, t):
        if not math.isfinite(value):
            return -math.inf, position
    deviations = [abs(value - ends) for value in v]
    i = deviations.index(max(deviations))
    return ends - v[i], t[i]


@dataclass(frozen=True, eq=False)
class BezierCurve:
    """A quadratic Bezier curve in the parameter space of one architecture.

    Args:
        architecture: a module of the shared architecture (its parameter values are unused
            and may share memory with `start`; its non-BatchNorm buffers are kept).
        start, control, end: parameter name -> tensor for w1, θ and w2. A fitted curve's ends
            share memory with its models' parameters where they are on the same device.
    """

    architecture: nn.Module
    start: dict[str, Tensor]
    control: dict[str, Tensor]
    end: dict[str, Tensor]

    def point(self, t: float) -> dict[str, Tensor]:
        """Parameters φ(t); exactly w1 at t = 0 and w2 at t = 1."""
        return _bezier(float(t), self.start, self.control, self.end)

    def model_at(self, t: float, bn_batches: Iterable | None = None) -> nn.Module:
        """A new module with weights φ(t), BatchNorm re-estimated on bn_batches, in eval mode."""
        return _module_with(self.architecture, self.point(t), bn_batches)


def fit_bezier(
    model_a: nn.Module,
    model_b: nn.Module,
    loss_fn: LossFn,
    train_batches: BatchSource,
    *,
    steps: int = 4000,
    lr: float = 0.2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    control: Mapping[str, Tensor] | None = None,
) -> BezierCurve:
    """Train the control point θ of a quadratic Bezier curve from model_a to model_b.

    SGD with momentum and L2 on θ only; the ends are never updated. One t ~ U(0, 1) is drawn
    from `generator` per batch. The learning rate follows Garipov et al.'s curve schedule:
    constant for the first half, linear down to 1% at 90% of the steps, then 1%. The network
    runs in train mode (BatchNorm uses batch statistics, as in the paper); dropout draws from
    a torch RNG seeded from `generator`, so runs repeat. Parameters that do not require grad
    keep θ at the midpoint.

    Args:
        model_a, model_b: two models of one architecture (same parameter names and shapes).
        loss_fn: (outputs, targets) -> mean-reduced scalar loss.
        train_batches: a re-iterable of (inputs, targets), or a callable taking the generator
            and returning one epoch of them; it is restarted whenever it runs out.
        steps: SGD steps (batches). The paper trains 10 epochs; longer curves connect better.
        lr, momentum, weight_decay: SGD settings (the paper: 0.1, 0.9, 5e-4 at batch 128).
            0.2 reached the mc of a 4×-longer fit at 0.05 in about half its steps on the
            demo's MLPs (benchmarks/curve_budget.py; README "Curves").
        generator: draws t, seeds dropout and is passed to a callable train_batches.
        device: where to train; defaults to model_a's device.
        control: θ to start from (a previous round's `curve.control`, to fit in rounds with
            the schedule restarted); None: the midpoint of the ends.
    Returns:
        the curve, on `device`.
    """
    _check_positive_int(steps, "steps")
    start, end = _matching_parameters(model_a, model_b)
    where = next(iter(start.values())).device if device is None else torch.device(device)
    if control is not None and set(control) != set(start):
        raise ValueError(f"control must hold the parameters {sorted(start)[:4]}..., got "
                         f"{sorted(control)[:4]}...")
    architecture = _sharing(model_a, start).to(where)  # own buffers: train mode updates them
    start = {n: p.to(where) for n, p in start.items()}
    end = {n: p.to(where) for n, p in end.items()}
    theta = {n: ((start[n] + end[n]) / 2 if control is None
                 else control[n].detach().to(where, copy=True)).requires_grad_(p.requires_grad)
             for n, p in model_a.named_parameters()}
    trained = [p for p in theta.values() if p.requires_grad]
    optimizer = torch.optim.SGD(trained, lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: _garipov(k / steps))
    architecture.train()
    dtype = next(iter(start.values())).dtype
    with _seeded_rng(generator, where):
        for _, (x, y) in zip(range(steps), _endless(train_batches, generator)):
            t = float(torch.rand((), generator=generator, device=_gen_device(generator)))
            params = _bezier(t, start, theta, end, exact_ends=False)  # keep θ in the graph
            out = functional_call(architecture, params, (_to(x, where, dtype),))
            loss = loss_fn(out, _to(y, where, dtype))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # no gradient kept through the next forward
            schedule.step()
    control = {n: p.detach() for n, p in theta.items()}
    return BezierCurve(architecture.eval(), start, control, end)


def stackable(module: nn.Module) -> bool:
    """Curves of `module` can be fitted stacked: no BatchNorm (batch statistics) and no
    dropout (its draws), so that each curve's step sees only its own batch and t."""
    return not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))
                   for m in module.modules())


def fit_bezier_stacked(
    pairs: Sequence[tuple[nn.Module, nn.Module]],
    loss_fn: LossFn,
    train_batches: BatchSource,
    generators: Sequence[torch.Generator],
    *,
    steps: int = 4000,
    lr: float = 0.2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    controls: Sequence[Mapping[str, Tensor] | None] | None = None,
) -> list[BezierCurve]:
    """Fit several curves of one architecture at once: one vmapped forward and backward per
    step over all pairs, each pair with its own generator (batches and t) and control point.

    Curve i is `fit_bezier(*pairs[i], loss_fn, train_batches, generator=generators[i],
    control=controls[i], ...)` up to float rounding: the pairs share nothing but the step
    count and schedule (SGD is elementwise; the summed loss gives each θ its own gradient).
    Only for `stackable` architectures; everything runs on the first model's device.
    """
    _check_positive_int(steps, "steps")
    if not pairs or len(generators) != len(pairs):
        raise ValueError(f"expected one generator per pair, got {len(generators)} for "
                         f"{len(pairs)} pairs")
    if not stackable(pairs[0][0]):
        raise ValueError("fit_bezier_stacked: the architecture has BatchNorm or dropout; "
                         "use fit_bezier")
    controls = list(controls) if controls is not None else [None] * len(pairs)
    ends = [_matching_parameters(a, b) for a, b in pairs]
    trains = {n: p.requires_grad for n, p in pairs[0][0].named_parameters()}
    if any(c is not None and set(c) != set(trains) for c in controls):
        raise ValueError(f"controls must hold the parameters {sorted(trains)[:4]}...")
    start = {n: torch.stack([w1[n] for w1, _ in ends]) for n in trains}
    end = {n: torch.stack([w2[n] for _, w2 in ends]) for n in trains}
    theta = {n: torch.stack([(w1[n] + w2[n]) / 2 if c is None
                             else c[n].detach().to(start[n].device)
                             for (w1, w2), c in zip(ends, controls)])
             .requires_grad_(grad) for n, grad in trains.items()}  # frozen: θ stays put
    architecture = _sharing(pairs[0][0], ends[0][0]).train()
    optimizer = torch.optim.SGD([p for p in theta.values() if p.requires_grad], lr=lr,
                                momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: _garipov(k / steps))
    dtype, device = next(iter(start.values())).dtype, next(iter(start.values())).device
    for generator in generators:  # the draw fit_bezier spends seeding dropout
        torch.randint(0, 2**62, (), generator=generator, device=_gen_device(generator))
    streams = [_endless(train_batches, g) for g in generators]

    def one(w1: Params, th: Params, w2: Params, coefficients: Tensor, x: Tensor, y: Tensor):
        a, b, c = coefficients
        params = {n: a * w1[n] + b * th[n] + c * w2[n] for n in w1}
        return loss_fn(functional_call(architecture, params, (x,)), y)

    for _ in range(steps):
        batches, ts = [], []
        for stream, generator in zip(streams, generators):
            batches.append(next(stream))
            ts.append(float(torch.rand((), generator=generator, device=_gen_device(generator))))
        coefficients = torch.tensor([[(1 - t) ** 2, 2 * t * (1 - t), t**2] for t in ts],
                                    dtype=dtype, device=device)
        x = torch.stack([_to(x, device, dtype) for x, _ in batches])
        y = torch.stack([_to(y, device, dtype) for _, y in batches])
        loss = vmap(one)(start, theta, end, coefficients, x, y).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # no gradient kept through the next forward
        schedule.step()
    curves = []
    for i, (w1, w2) in enumerate(ends):
        control = {n: theta[n][i].detach().clone() for n in w1}  # a view would pin all θs
        curves.append(BezierCurve(_sharing(architecture, w1).eval(), w1, control, w2))
    return curves


def projected_limit(history: Sequence[float]) -> tuple[float, float]:
    """Where the mc of rounds of curve fitting is heading, from its last three values.

    The tail is taken as geometric (Aitken's Δ²): with steps d1, d2 between the last three
    rounds and ratio q = d2 / d1 in [0, 1), the remaining drift is d2 q / (1 − q). A tail that
    does not shrink (q outside [0, 1)) or only two rounds leave an unbounded drift in the
    direction of the last step (±inf); a last step of exactly 0 leaves none.

    Returns:
        (projected limit, remaining drift = limit − last value); (nan, nan) for fewer than two
        rounds or non-finite values.
    """
    tail = [float(v) for v in history[-3:]]
    if len(tail) < 2 or not all(math.isfinite(v) for v in tail):
        return math.nan, math.nan
    d2 = tail[-1] - tail[-2]
    if d2 == 0.0:
        return tail[-1], 0.0
    d1 = tail[-2] - tail[-3] if len(tail) == 3 else 0.0
    q = d2 / d1 if d1 != 0.0 else math.inf
    drift = d2 * q / (1 - q) if 0.0 <= q < 1.0 else math.copysign(math.inf, d2)
    return tail[-1] + drift, drift


def evaluate_curve(
    curve: BezierCurve,
    ts: Sequence[float],
    evaluate: Evaluate,
    bn_batches: Iterable | None = None,
) -> dict[str, list[float]]:
    """Evaluate the models φ(t) along a curve.

    Args:
        curve: a fitted (or hand-made) curve.
        ts: (T,) curve positions.
        evaluate: module -> {metric name: value}; the same keys at every t.
        bn_batches: batches (or inputs) to re-estimate BatchNorm statistics at each t.
    Returns:
        metric name -> (T,) values along ts.
    """
    rows = [evaluate(curve.model_at(t, bn_batches)) for t in ts]
    return _columns(rows)


def linear_barrier(values: Sequence[float], alphas: Sequence[float]) -> float:
    """Barrier on the straight segment from its values L(α) at `alphas` (0 first, 1 last):
    max_α L(α) − ((1−α) L(0) + α L(1)); positive = barrier, never below 0."""
    a = [float(x) for x in alphas]
    if len(a) < 2 or a[0] != 0.0 or a[-1] != 1.0 or len(values) != len(a):
        raise ValueError(f"alphas must run from 0 to 1 with at least 2 entries, one per value, "
                         f"got {a}")
    first, last = values[0], values[-1]
    return max(v - first - alpha * (last - first) for v, alpha in zip(values, a))


def recondition_batchnorm(model: nn.Module, batches: Iterable) -> nn.Module:
    """Recompute BatchNorm running statistics as the plain average over `batches`.

    Running stats are reset, then every batch is forwarded with only the BatchNorm layers in
    train mode (momentum None: cumulative average of per-batch mean and unbiased variance;
    dropout stays off). Models without BatchNorm are left as they are.

    Args:
        model: changed in place.
        batches: (inputs, targets) pairs or bare input tensors.
    Returns:
        the model, in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return model.eval()
    saved = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    param = next(model.parameters())
    seen = 0
    with torch.no_grad():
        for batch in batches:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(_to(inputs, param.device, param.dtype))
            seen += 1
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    if seen == 0:
        raise ValueError("recondition_batchnorm got no batches")
    return model.eval()


def _bezier(t: float, w1: Params, theta: Params, w2: Params, *, exact_ends: bool = True) -> Params:
    """φ(t); with exact_ends, copies of w1 / w2 at t = 0 / 1 (bit for bit)."""
    if exact_ends and t in (0.0, 1.0):
        return {n: p.clone() for n, p in (w1 if t == 0.0 else w2).items()}
    a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t**2
    return {n: a * w1[n] + b * theta[n] + c * w2[n] for n in w1}


def _module_with(architecture: nn.Module, params: Params, bn_batches: Iterable | None) -> nn.Module:
    """A copy of `architecture` whose parameters are `params` (fresh tensors: they are not
    copied again), BatchNorm re-estimated, in eval mode."""
    model = _sharing(architecture, params)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        if bn_batches is None:
            raise ValueError("the model has BatchNorm layers: pass bn_batches to re-estimate them")
        recondition_batchnorm(model, bn_batches)
    return model.eval()


def _sharing(module: nn.Module, params: Mapping[str, Tensor]) -> nn.Module:
    """A deep copy of `module` whose parameters named in `params` are those tensors, detached
    and cast to the module's dtype and device (no copy where they match); buffers are copied."""
    memo = {id(p): nn.Parameter(params[n].detach().to(p), p.requires_grad)
            for n, p in module.named_parameters() if n in params}
    return copy.deepcopy(module, memo)


def _matching_parameters(a: nn.Module, b: nn.Module) -> tuple[Params, Params]:
    """Both models' parameters, detached (not copied), checked to share names and shapes."""
    pa = {n: p.detach() for n, p in a.named_parameters()}
    pb = {n: p.detach() for n, p in b.named_parameters()}
    shapes_a = {n: tuple(p.shape) for n, p in pa.items()}
    shapes_b = {n: tuple(p.shape) for n, p in pb.items()}
    if shapes_a != shapes_b:
        diff = sorted(set(shapes_a.items()) ^ set(shapes_b.items()))
        raise ValueError(f"model_a and model_b differ in parameters (name, shape): {diff[:4]}")
    return pa, {n: pb[n].to(pa[n].device) for n in pa}


def _endless(source: BatchSource, generator: torch.Generator | None) -> Iterator[Batch]:
    """Batches forever, restarting the source at the end of each epoch."""
    while True:
        epoch = source(generator) if callable(source) else source
        empty = True
        for batch in epoch:
            empty = False
            yield batch
        if empty:
            raise ValueError("train_batches yielded no batches")


def _garipov(fraction: float) -> float:
    if fraction <= 0.5:
        return 1.0
    if fraction <= 0.9:
        return 1.0 - (fraction - 0.5) / 0.4 * 0.99
    return 0.01


@contextmanager
def _seeded_rng(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """Fork the global torch RNG (CPU and a CUDA `device`) and seed it from `generator`."""
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=_gen_device(generator)))
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _columns(rows: list[Mapping[str, float]]) -> dict[str, list[float]]:
    keys = list(rows[0]) if rows else []
    for row in rows:
        if list(row) != keys:
            raise ValueError(f"evaluate returned keys {sorted(row)}, expected {sorted(keys)}")
    return {k: [float(row[k]) for row in rows] for k in keys}


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _to(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
