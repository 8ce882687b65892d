"""Landscape metrics of one model and of one seed pair, as table columns (wires zoo.metrics)."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from zoo.datasets.base import DataBundle
from zoo.metrics import connectivity, hessian, similarity, spectra
from zoo.objective import Objective, output_loss
from zoo.phases import default_thresholds
from zoo.spec import CurveSpec, MetricsSpec

PROBE_SEED = 0  # one fixed probe subset for the whole zoo, so models are measured alike
BN_SAMPLES = 1280  # train samples that re-estimate BatchNorm statistics in the studies


class PdeLoss(nn.Module):
    """Wraps a PINN so that forward(points) is its PDE loss: metrics then treat it like a net."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.objective.loss(self.model, (points,))


def _scalar_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return outputs


def loss_view(model: nn.Module, objective: Objective) -> tuple[nn.Module, Callable]:
    """The module and (outputs, targets) loss that the metrics library differentiates."""
    if objective.task == "pinn":
        return PdeLoss(model, objective), _scalar_loss
    return model, output_loss


def unwrap(module: nn.Module) -> nn.Module:
    return module.model if isinstance(module, PdeLoss) else module


def probe_batches(tensors: tuple[torch.Tensor, ...], batches: int, batch_size: int,
                  seed: int = PROBE_SEED) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`batches` × `batch_size` samples drawn once from `tensors` with a fixed seed."""
    count = min(batches * batch_size, tensors[0].shape[0])
    index = torch.randperm(tensors[0].shape[0], generator=torch.Generator().manual_seed(seed))
    index = index[:count]
    targets = tensors[1] if len(tensors) > 1 else torch.zeros(tensors[0].shape[0])
    return [(tensors[0][i], targets[i]) for i in index.split(batch_size)]


def model_metrics(model: nn.Module, objective: Objective, spec: MetricsSpec,
                  seed: int) -> dict[str, Any]:
    """Hessian (train and test probes) and heavy-tail columns of one model at a metric epoch."""
    row: dict[str, Any] = {}
    settings = spec.hessian
    if settings.enabled:
        module, loss_fn = loss_view(model, objective)
        row.update(hessian_samples=settings.batches * settings.batch_size,
                   hessian_max_iter=settings.max_iter, hessian_tol=settings.tol)
        max_basis, probe_block = hessian.vector_limits(module, settings.vector_memory_gb * 1e9)
        for split in ("train", "test"):
            tensors = objective.bundle.train if split == "train" else objective.bundle.test
            batches = probe_batches(tensors, settings.batches, settings.batch_size)
            generator = torch.Generator().manual_seed(seed)
            options = {"max_iter": settings.max_iter, "tol": settings.tol, "generator": generator,
                       "micro_batch_size": settings.micro_batch_size}
            row[f"hessian_top_eigenvalue_{split}"] = hessian.top_eigenvalue(
                module, loss_fn, batches, **options, max_basis=max_basis)
            estimate, stderr = hessian.trace(module, loss_fn, batches, **options,
                                             probe_block=probe_block)
            row[f"hessian_trace_{split}"], row[f"hessian_trace_stderr_{split}"] = estimate, stderr
    if spec.spectra:
        alphas = spectra.layer_alphas(model, min_eigenvalues=spec.spectra_min_eigenvalues)
        row["heavy_tail_min_eigenvalues"] = spec.spectra_min_eigenvalues
        names = [n for n, p in model.named_parameters() if p.dim() >= 2]
        row["heavy_tail_alphas"] = [alphas.get(n, math.nan) for n in names]
        row["heavy_tail_alpha"] = float(np.mean(list(alphas.values()))) if alphas else None
    return row


def _outputs(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model.eval()(inputs)
    return out.reshape(-1, out.shape[-1])


def cka_columns(a: nn.Module, b: nn.Module, objective: Objective,
                spec: MetricsSpec) -> dict[str, Any]:
    """Linear CKA of logits on test batches (averaged per batch), and Yang's mixup variant."""
    settings = spec.similarity
    test = probe_batches(objective.bundle.test, settings.batches, settings.batch_size)
    values = [similarity.linear_cka(_outputs(a, x), _outputs(b, x)) for x, _ in test]
    row = {"cka": float(np.mean(values)), "cka_samples": sum(len(x) for x, _ in test)}
    if objective.task == "classification":
        train = probe_batches(objective.bundle.train, settings.mixup_batches,
                              settings.batch_size)
        inputs = mixup_inputs([x for x, _ in train], settings.mixup_alpha, PROBE_SEED)
        row["cka_mixup"] = similarity.linear_cka(
            torch.cat([_outputs(a, x).softmax(-1) for x in inputs]),
            torch.cat([_outputs(b, x).softmax(-1) for x in inputs]))
    return row


def mixup_inputs(batches: Sequence[torch.Tensor], alpha: float,
                 seed: int) -> list[torch.Tensor]:
    """Mixup of each batch with a permutation of itself, as Yang et al. measure CKA.

    Per batch, in order: λ ~ Beta(alpha, alpha), then a permutation of the batch, both from
    one numpy Generator seeded with `seed`; the batch becomes λ x + (1 − λ) x[permutation].
    """
    rng = np.random.default_rng(seed)
    mixed = []
    for x in batches:
        lam = float(rng.beta(alpha, alpha))
        order = torch.as_tensor(rng.permutation(x.shape[0]), device=x.device)
        mixed.append(lam * x + (1 - lam) * x[order])
    return mixed


def _evaluator(objective: Objective, splits: Sequence[str] = ("train", "test"),
               ) -> Callable[[nn.Module], dict[str, float]]:
    scale = 1.0 if objective.task == "pinn" else 100.0  # error in percentage points

    def evaluate(module: nn.Module) -> dict[str, float]:
        model = unwrap(module)
        out = {}
        for split in splits:
            result = objective.evaluate(model, split)
            out[f"{split}_loss"] = result["loss"]
            out[f"{split}_error"] = result["error"] * scale
        return out

    return evaluate


def curve_columns(a: nn.Module, b: nn.Module, objective: Objective, spec: MetricsSpec,
                  seed: int, tolerance: float = 1.0) -> dict[str, Any]:
    """Bezier curve fit until its mc converges; mc on train/test error and loss; the straight
    segment beside it. `tolerance` (error points) applies when the spec sets none."""
    return curves_columns([(a, b)], objective, spec, [seed], tolerance)[0]


def curves_columns(pairs: Sequence[tuple[nn.Module, nn.Module]], objective: Objective,
                   spec: MetricsSpec, seeds: Sequence[int],
                   tolerance: float = 1.0) -> list[dict[str, Any]]:
    """`curve_columns` of several seed pairs of one cell, their curves fitted together.

    Where the architecture allows (`connectivity.stackable`, not a PINN) every round fits the
    pairs still drifting as one stacked fit; each pair keeps its own generator (seeded with
    its seed), rounds and stopping point, so its columns do not depend on its cellmates.
    """
    settings = spec.curve
    views = [(loss_view(a, objective)[0], loss_view(b, objective)[0]) for a, b in pairs]
    loss_fn = loss_view(pairs[0][0], objective)[1]
    train = objective.bundle.train
    rounds = round_steps(settings, objective.bundle.num_train)
    tolerance = settings.tolerance if settings.tolerance is not None else tolerance
    bn_samples = min(settings.bn_samples or train[0].shape[0], train[0].shape[0])
    bn_batches = probe_batches(train, math.ceil(bn_samples / settings.batch_size),
                               settings.batch_size)

    def epoch(generator: torch.Generator) -> Iterable:
        order = torch.randperm(train[0].shape[0], generator=generator)
        targets = train[1] if len(train) > 1 else torch.zeros(train[0].shape[0])
        return ((train[0][i], targets[i]) for i in order.split(settings.batch_size))

    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    ts = [float(t) for t in np.linspace(0, 1, settings.points)]
    evaluate, train_error = _evaluator(objective), _evaluator(objective, ("train",))
    together = objective.task != "pinn" and connectivity.stackable(pairs[0][0])
    options = {"steps": rounds, "lr": settings.learning_rate}

    def fit_round(active: list[int], controls: list[Any]) -> list[Any]:
        if together:
            return connectivity.fit_bezier_stacked(
                [views[i] for i in active], loss_fn, epoch, [generators[i] for i in active],
                controls=controls, **options)
        return [connectivity.fit_bezier(*views[i], loss_fn, epoch, generator=generators[i],
                                        control=control, **options)
                for i, control in zip(active, controls)]

    def mc_of(curve: Any) -> float:
        along = connectivity.evaluate_curve(curve, ts, train_error, bn_batches)["train_error"]
        return connectivity.mode_connectivity(along, ts)[0]

    curves: list[Any] = [None] * len(pairs)
    histories: list[list[float]] = [[] for _ in pairs]
    active = list(range(len(pairs)))
    while active:
        fitted = fit_round(active, [None if curves[i] is None else curves[i].control
                                    for i in active])
        for i, curve in zip(active, fitted):
            curves[i] = curve
            histories[i].append(mc_of(curve))
        active = [i for i in active if len(histories[i]) < settings.max_rounds
                  and not _converged(histories[i], tolerance)]
    return [_curve_row(curve, history, tolerance, ts, evaluate, bn_batches, settings, rounds)
            for curve, history in zip(curves, histories)]


def _curve_row(curve: Any, history: list[float], tolerance: float, ts: list[float],
               evaluate: Callable, bn_batches: list, settings: CurveSpec,
               rounds: int) -> dict[str, Any]:
    """The pair columns of a fitted curve: values along it and the straight segment, mc, t*,
    the fit's history and where its mc is heading."""
    values = connectivity.evaluate_curve(curve, ts, evaluate, bn_batches)
    line = connectivity.BezierCurve(curve.architecture, curve.start,
                                    {n: (curve.start[n] + curve.end[n]) / 2 for n in curve.start},
                                    curve.end)  # a Bezier with θ at the midpoint is the segment
    straight = connectivity.evaluate_curve(line, ts, evaluate, bn_batches)
    limit, drift = connectivity.projected_limit(history)
    ends = (values["train_error"][0] + values["train_error"][-1]) / 2
    row: dict[str, Any] = {"curve_ts": ts, "linear_alphas": ts,
                           "curve_steps": rounds * len(history), "curve_rounds": len(history),
                           "curve_mc_history": history, "curve_tolerance": tolerance,
                           "mc_converged": _converged(history, tolerance),
                           "mc_drift": drift,
                           "mc_projected": min(limit, ends),  # errors >= 0: mc <= the ends'
                           "curve_bn_samples": sum(len(x) for x, _ in bn_batches),
                           "curve_learning_rate": settings.learning_rate,
                           "curve_batch_size": settings.batch_size}
    for key, along in values.items():
        mc, t_star = connectivity.mode_connectivity(along, ts)
        row[f"mc_{key}"], row[f"t_star_{key}"] = mc, t_star
        row[f"curve_{key}"], row[f"linear_{key}"] = along, straight[key]
    row["linear_barrier_train_loss"] = connectivity.linear_barrier(straight["train_loss"], ts)
    row["linear_barrier_test_error"] = connectivity.linear_barrier(straight["test_error"], ts)
    return row


def round_steps(settings: CurveSpec, num_train: int) -> int:
    """SGD steps of one curve-fit round: `steps`, or `epochs` epochs of the train set."""
    if settings.steps is not None:
        return settings.steps
    return settings.epochs * math.ceil(num_train / settings.batch_size)


def _converged(history: Sequence[float], tolerance: float) -> bool:
    """The projected remaining drift of mc (`connectivity.projected_limit`) is below
    `tolerance`: at least three rounds whose steps shrink fast enough, or a zero last step."""
    drift = connectivity.projected_limit(history)[1]
    return math.isfinite(drift) and abs(drift) < tolerance


def pair_metrics(a: nn.Module, b: nn.Module, bundle: DataBundle, beta: float,
                 spec: MetricsSpec, seed: int) -> dict[str, Any]:
    """CKA and connectivity columns of one seed pair (both models finite)."""
    return pairs_metrics([(a, b)], bundle, beta, spec, [seed])[0]


def pairs_metrics(pairs: Sequence[tuple[nn.Module, nn.Module]], bundle: DataBundle,
                  beta: float, spec: MetricsSpec, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """`pair_metrics` of several seed pairs of one cell, their curves fitted together."""
    objective = Objective(bundle, beta=beta)
    rows: list[dict[str, Any]] = [{} for _ in pairs]
    if spec.similarity.enabled:
        for row, (a, b) in zip(rows, pairs):
            row.update(cka_columns(a, b, objective, spec))
    if spec.curve.enabled and pairs:
        tolerance = default_thresholds(bundle.info.task).mc / 2  # when the spec sets none
        for row, curve in zip(rows, curves_columns(pairs, objective, spec, seeds, tolerance)):
            row.update(curve)
    return rows
