"""Phase labels of Yang et al. (2021) from a cell's train loss, mode connectivity and CKA.

| phase | train loss | mc (error points)     | CKA  |
|-------|------------|-----------------------|------|
| I     | high       | < 0                   | —    |
| II    | high       | >= 0                  | —    |
| III   | low        | < −mc threshold       | —    |
| IV-A  | low        | |mc| < mc threshold   | low  |
| IV-B  | low        | |mc| < mc threshold   | high |

Yang et al.'s definitions are the defaults: phase IV needs mc ≈ 0 (`mc_bound="two-sided"`; a
low-loss cell with mc >= the threshold is in none of their phases and gets no label) and
IV-A / IV-B is decided by their CKA, softmax outputs on mixup inputs (`cka_metric=
"cka_mixup"`, where the task measures it). Ours are options: `mc_bound="lower"` (IV needs
only mc >= −threshold) and `cka_metric="cka"` (logits on test data). A cell gets no label
where a metric the table needs was switched off or failed (NaN), and every label says whether
it is confident (`cell_phase`). The numeric thresholds are published nowhere; ours are
choices, stored with every label, and `zoo relabel` applies others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from zoo.errors import SpecError

PHASES = ("I", "II", "III", "IV-A", "IV-B")
CKA_METRICS = ("cka_mixup", "cka")  # Yang et al.'s first
MC_BOUNDS = ("two-sided", "lower")  # Yang et al.'s first


@dataclass(frozen=True)
class Thresholds:
    """Where "high loss", "mc ≈ 0" and "high CKA" begin.

    Args:
        high_loss: train loss above this is high, in the task's loss unit (nats of
            cross-entropy; relative L2 error for PINNs). Must be > 0.
        mc: |mc| below this counts as connected, in the unit of the curve metric (error
            percentage points for classification and language models; relative L2 error for
            PINNs). Must be >= 0.
        cka: CKA at or above this is high, on the scale of `cka_metric` (defaults:
            `CKA_THRESHOLDS`). In [0, 1].
    """

    high_loss: float
    mc: float
    cka: float
    cka_metric: str = "cka_mixup"
    mc_bound: str = "two-sided"

    def __post_init__(self) -> None:
        _check_number("high_loss", self.high_loss, "a finite number > 0", lambda v: v > 0)
        _check_number("mc", self.mc, "a finite number >= 0", lambda v: v >= 0)
        _check_number("cka", self.cka, "a number in [0, 1]", lambda v: 0 <= v <= 1)
        check_choices({"cka_metric": self.cka_metric, "mc_bound": self.mc_bound})

    def mc_range(self, phase: str) -> tuple[float, float]:
        """The mc interval [low, high) of a phase under these thresholds."""
        upper = self.mc if self.mc_bound == "two-sided" else math.inf
        return {"I": (-math.inf, 0.0), "II": (0.0, math.inf), "III": (-math.inf, -self.mc),
                "IV-A": (-self.mc, upper), "IV-B": (-self.mc, upper)}[phase]

    def to_dict(self) -> dict[str, float | str]:
        """Field name -> value, sorted by name (for sorted-key JSON next to the labels)."""
        return dict(sorted(asdict(self).items()))



def check_choices(phases: Mapping[str, Any]) -> None:
    """Raise SpecError unless the `cka_metric` and `mc_bound` in `phases` (if any) are known."""
    for name, allowed in (("cka_metric", CKA_METRICS), ("mc_bound", MC_BOUNDS)):
        if name in phases and phases[name] not in allowed:
            raise SpecError(f"phases.{name} must be one of {', '.join(allowed)}, got "
                            f"{phases[name]!r}")


def _check_number(name: str, value: object, allowed: str, ok: Callable[[float], bool]) -> None:
    valid = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and ok(value)
    )
    if not valid:
        raise SpecError(f"phases.{name} must be {allowed}, got {value!r}")


# Per-task defaults, scaled by the chance loss ln C of the zoo's own data set (C classes, or
# the vocabulary size for language models), so that one rule fits CIFAR-10 and Tiny-ImageNet.
# classification: the mnist1d pilot fit 0.2 nats of train cross-entropy at C = 10, i.e. 8.7 %
# of ln C; |mc| < 2 points of train error; CKA of logits >= 0.9. language_model: 2.0 nats per
# token at a 256-symbol vocabulary (36 % of ln V). pinn: the relative L2 error to the exact
# solution replaces the loss (PINN residual losses are not comparable across PDE
# coefficients); > 0.1 is high, |mc| < 0.02; not scaled.
HIGH_LOSS_FRACTION = {"classification": 0.2 / math.log(10), "language_model": 2.0 / math.log(256)}
# mc: Yang et al. define phase IV by mc ≈ 0, so |mc| < 2 points by default.
# CKA: Yang et al.'s mixup CKA where it is measured (classification); the others have only
# the logit CKA. Each metric has its own default threshold (`CKA_THRESHOLDS`), because the two
# live on different scales: on the demo's low-loss cells the mixup CKA is 0.61–0.66 (width 128)
# and 0.85–0.89 (width 512) where the logit CKA is 0.93–0.98. Logits: 0.9, fitted on the
# mnist1d pilot. Mixup: 0.75, the middle of the gap between those two groups (per-cell std
# <= 0.011); the upper group is the more accurate at each batch size (72.8 vs 72.6 %,
# 67.9 vs 65.6 %), and Yang et al. find the best test accuracy in IV-B. At 0.9 the demo's
# most accurate cells were IV-A (0.889, 0.854; independently 0.889, 0.857).
CKA_THRESHOLDS = {"cka_mixup": 0.75, "cka": 0.9}
_DEFAULTS = {
    "classification": Thresholds(high_loss=0.2, mc=2.0, cka=CKA_THRESHOLDS["cka_mixup"]),
    "language_model": Thresholds(high_loss=2.0, mc=2.0, cka=CKA_THRESHOLDS["cka"],
                                 cka_metric="cka"),
    "pinn": Thresholds(high_loss=0.1, mc=0.02, cka=CKA_THRESHOLDS["cka"], cka_metric="cka"),
}


def default_thresholds(task: str, num_classes: int | None = None) -> Thresholds:
    """The default thresholds of a task and data set.

    Args:
        task: "classification", "language_model" or "pinn".
        num_classes: classes (vocabulary size) of the data set; high_loss becomes a fixed
            fraction of the chance loss ln C. None: the reference C (10 classes, 256 symbols).
    """
    if task not in _DEFAULTS:
        raise SpecError(f"phases.task must be one of {', '.join(_DEFAULTS)}, got {task!r}")
    base = _DEFAULTS[task]
    if num_classes is None or task == "pinn":
        return base
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise SpecError(f"phases: num_classes must be an integer >= 2, got {num_classes!r}")
    return replace(base, high_loss=HIGH_LOSS_FRACTION[task] * math.log(num_classes))


def thresholds_for(task: str, num_classes: int | None,
                   overrides: Mapping[str, float]) -> Thresholds:
    """The default thresholds of a task and data set with a spec's `phases` overrides; a
    `cka_metric` override without a `cka` one brings that metric's default threshold."""
    unknown = sorted(set(overrides) - {f.name for f in fields(Thresholds)})
    if unknown:
        raise SpecError(f"phases: unknown field(s) {unknown}; allowed: "
                        f"{', '.join(sorted(f.name for f in fields(Thresholds)))}")
    check_choices(overrides)
    changes = dict(overrides)
    if "cka_metric" in changes and "cka" not in changes:
        changes["cka"] = CKA_THRESHOLDS[changes["cka_metric"]]
    return replace(default_thresholds(task, num_classes), **changes)


def label(train_loss: float, mc: float, cka: float, thresholds: Thresholds) -> str | None:
    """The phase of a cell, or None where a metric it needs was not measured or failed.

    Args:
        train_loss: mean train loss of the cell's models (PINN: relative L2 error).
        mc: mean mode connectivity of its seed pairs (negative = barrier).
        cka: mean CKA (thresholds.cka_metric) of its seed pairs (only IV-A / IV-B need it).
        thresholds: where high / ≈ 0 / high begin, and which definitions apply.
    Returns:
        one of PHASES, or None: a NaN train loss, a NaN mc, low loss with mc above the
        two-sided bound (in none of Yang et al.'s phases), or (phase IV) a NaN CKA. A cell
        whose every seed diverged is labelled by `cell_phase`, not here.
    """
    if math.isnan(train_loss) or math.isnan(mc):
        return None
    if train_loss > thresholds.high_loss:
        return "I" if mc < 0 else "II"
    if mc < -thresholds.mc:
        return "III"
    if mc >= thresholds.mc_range("IV-B")[1] or math.isnan(cka):
        return None
    return "IV-B" if cka >= thresholds.cka else "IV-A"


def cell_phase(row: Mapping[str, Any], task: str,
               thresholds: Thresholds) -> tuple[str | None, bool | None]:
    """A cell's phase and whether it is confident, from its cells-table row alone.

    Reads `finite_fraction`, `num_pairs`, `num_pairs_converged`, the `_mean` / `_std` of the
    train loss (PINN: train error), `mc_train_error` and the CKA, and `mc_projected_mean`. A
    cell whose every seed diverged is "I", confidently. Otherwise the label is `label(...)`,
    and it is confident when (a) every mean that decided it lies more than one standard
    deviation (over models or pairs; at least two of them) from the threshold it was compared
    with: the train loss from high_loss; mc from each finite end of its phase's mc range;
    the CKA from cka (phase IV); and (b) mc_projected_mean, where the curve fits are heading,
    lies inside the same mc range, so more curve budget cannot move the label. mc only rose
    with more budget in our measurements, so II and IV (their range open upward, or bounded
    above by the ends' train error, which caps mc_projected) can be confident before the fits
    converge; I and III only once the projection stays below their bound. A row without
    mc_projected_mean (imported or older zoos) needs every pair converged instead.

    Returns:
        (phase or None, confident or None when there is no phase).
    """
    if row.get("finite_fraction") == 0.0:
        return "I", True  # every seed diverged: the hottest corner of the grid
    loss_name = "train_error" if task == "pinn" else "train_loss"
    cka_name = thresholds.cka_metric
    loss, mc, cka = (_value(row, f"{name}_mean") for name in (loss_name, "mc_train_error",
                                                              cka_name))
    phase = label(loss, mc, cka, thresholds)
    if phase is None:
        return None, None
    pairs = row.get("num_pairs") or 0
    low, high = thresholds.mc_range(phase)
    decided = [(loss_name, thresholds.high_loss, row.get("num_models") or 0)]
    decided += [("mc_train_error", bound, pairs) for bound in (low, high) if math.isfinite(bound)]
    if phase.startswith("IV"):
        decided.append((cka_name, thresholds.cka, pairs))
    clear = all(_clear_of(row, name, threshold, count) for name, threshold, count in decided)
    if row.get("mc_projected_mean", None) is None:
        settled = pairs >= 1 and row.get("num_pairs_converged") == pairs
    else:
        projected = _value(row, "mc_projected_mean")
        settled = low <= projected and (projected < high or high == math.inf)
    return phase, bool(clear and settled)


def _value(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    return math.nan if value is None else float(value)


def _clear_of(row: Mapping[str, Any], name: str, threshold: float, count: int) -> bool:
    """The mean of `name` lies more than one standard deviation from `threshold`."""
    mean, std = _value(row, f"{name}_mean"), _value(row, f"{name}_std")
    return count >= 2 and math.isfinite(std) and abs(mean - threshold) > std


def phase_columns(row: Mapping[str, Any], task: str, num_classes: int | None,
                  overrides: Mapping[str, float]) -> dict[str, Any]:
    """The cells-table columns of the label: phase, phase_confident and the thresholds used."""
    thresholds = thresholds_for(task, num_classes, overrides)
    phase, confident = cell_phase(row, task, thresholds)
    return {"phase": phase, "phase_confident": confident,
            **{f"phase_{k}": v for k, v in thresholds.to_dict().items()}}
