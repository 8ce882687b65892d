"""Phase labels of Yang et al. (2021) from a cell's train loss, mode connectivity and CKA.

| phase | train loss | mc                | CKA  |
|-------|------------|-------------------|------|
| I     | high       | < 0               | —    |
| II    | high       | >= 0              | —    |
| III   | low        | < −mc threshold   | —    |
| IV-A  | low        | >= −mc threshold  | low  |
| IV-B  | low        | >= −mc threshold  | high |

The thresholds are not published anywhere; ours are choices, stored with every label.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from zoo.errors import SpecError

PHASES = ("I", "II", "III", "IV-A", "IV-B")


@dataclass(frozen=True)
class Thresholds:
    """Where "high loss", "mc ≈ 0" and "high CKA" begin.

    Args:
        high_loss: train loss above this is high, in the task's loss unit (nats of
            cross-entropy; relative L2 error for PINNs). Must be > 0.
        mc: |mc| below this counts as connected, in the unit of the curve metric (error
            percentage points for classification and language models; relative L2 error for
            PINNs). Must be >= 0.
        cka: CKA at or above this is high. In [0, 1].
    """

    high_loss: float
    mc: float
    cka: float

    def __post_init__(self) -> None:
        _check_number("high_loss", self.high_loss, "a finite number > 0", lambda v: v > 0)
        _check_number("mc", self.mc, "a finite number >= 0", lambda v: v >= 0)
        _check_number("cka", self.cka, "a number in [0, 1]", lambda v: 0 <= v <= 1)

    def to_dict(self) -> dict[str, float]:
        """Field name -> value, sorted by name (for sorted-key JSON next to the labels)."""
        return dict(sorted(asdict(self).items()))



def _check_number(name: str, value: object, allowed: str, ok: Callable[[float], bool]) -> None:
    valid = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and ok(value)
    )
    if not valid:
        raise SpecError(f"phases.{name} must be {allowed}, got {value!r}")


# Per-task defaults. classification: the mnist1d pilot fit (train cross-entropy > 0.2 nats is
# high; |mc| < 2 points of train error; CKA of logits >= 0.9). language_model: > 2.0 nats per
# token is high (a small GPT on character/word data trains well below it), mc also on token
# error points. pinn: the relative L2 error to the exact solution replaces the loss (PINN
# residual losses are not comparable across PDE coefficients); > 0.1 is high, |mc| < 0.02.
_DEFAULTS = {
    "classification": Thresholds(high_loss=0.2, mc=2.0, cka=0.9),
    "language_model": Thresholds(high_loss=2.0, mc=2.0, cka=0.9),
    "pinn": Thresholds(high_loss=0.1, mc=0.02, cka=0.9),
}


def default_thresholds(task: str) -> Thresholds:
    """The default thresholds of a task: "classification", "language_model" or "pinn"."""
    if task not in _DEFAULTS:
        raise SpecError(f"phases.task must be one of {', '.join(_DEFAULTS)}, got {task!r}")
    return _DEFAULTS[task]


def label(train_loss: float, mc: float, cka: float, thresholds: Thresholds) -> str:
    """The phase of a cell.

    Args:
        train_loss: mean train loss of the cell's models (PINN: relative L2 error).
        mc: mean mode connectivity of its seed pairs (negative = barrier).
        cka: mean CKA of its seed pairs.
        thresholds: where high / ≈ 0 / high begin.
    Returns:
        one of PHASES. NaN train loss (diverged) gives "I". NaN mc (a diverged curve) counts
        as a barrier. NaN CKA counts as low (only IV-A / IV-B depend on it).
    """
    if math.isnan(train_loss):
        return "I"
    barrier = math.isnan(mc) or mc < 0
    if train_loss > thresholds.high_loss:
        return "I" if barrier else "II"
    if math.isnan(mc) or mc < -thresholds.mc:
        return "III"
    return "IV-B" if cka >= thresholds.cka else "IV-A"
