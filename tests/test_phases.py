"""Phase labels: every branch, the defaults and the threshold validation."""

from __future__ import annotations

import json
import math

import pytest

from zoo.errors import SpecError
from zoo.phases import (CKA_THRESHOLDS, PHASES, Thresholds, cell_phase, default_thresholds, label,
                        phase_columns, thresholds_for)

T = Thresholds(high_loss=0.2, mc=2.0, cka=0.9)
NAN = math.nan


@pytest.mark.parametrize(
    ("train_loss", "mc", "cka", "expected"),
    [
        (0.5, -3.0, 0.95, "I"),  # high loss, barrier
        (0.5, -0.1, 0.10, "I"),  # any negative mc is a barrier at high loss
        (0.5, 0.0, 0.95, "II"),  # mc >= 0
        (0.5, 4.0, 0.10, "II"),
        (math.inf, 1.0, 0.5, "II"),  # infinite loss is high
        (0.1, -2.5, 0.95, "III"),  # low loss, mc below −2
        (0.1, -2.0, 0.50, "IV-A"),  # −2 itself is connected
        (0.1, 0.5, 0.89, "IV-A"),
        (0.1, 0.5, 0.90, "IV-B"),  # CKA at the threshold is high
        (0.1, 1.99, 0.99, "IV-B"),  # Yang et al.: IV needs mc ≈ 0, |mc| < 2
        (0.1, 2.0, 0.99, None),  # low loss, mc >= 2: in none of Yang et al.'s phases
        (0.2, 0.0, 0.95, "IV-B"),  # loss at the threshold is low
        (0.5, -math.inf, NAN, "I"),  # a diverged point on the curve is a barrier
        (NAN, 1.0, 0.95, None),  # not measured: no label
        (0.5, NAN, 0.95, None),  # curve off or failed: no label, not a barrier
        (0.1, NAN, 0.95, None),
        (0.1, 0.0, NAN, None),  # phase IV needs CKA
        (0.5, -1.0, NAN, "I"),  # high loss does not need CKA
        (0.1, -3.0, NAN, "III"),  # nor does a barrier at low loss
    ],
)
def test_every_branch(train_loss: float, mc: float, cka: float, expected: str | None) -> None:
    assert label(train_loss, mc, cka, T) == expected
    assert expected is None or expected in PHASES


def test_label_reaches_exactly_the_five_phases_of_yang_et_al() -> None:
    seen = {label(loss, mc, cka, T) for loss in (0.05, 0.5, math.nan)
            for mc in (-10.0, 0.0, 10.0, math.nan) for cka in (0.1, 0.95, math.nan)}
    assert seen == {*PHASES, None} and len(PHASES) == 5  # None: a metric it needs is missing


def test_defaults_per_task_decide_the_phase_of_the_same_numbers_differently() -> None:
    # a language model's cross-entropy of 1.5 nats is low, a classifier's is high
    assert label(1.5, 0.0, 0.95, default_thresholds("language_model")) == "IV-B"
    assert label(1.5, 0.0, 0.95, default_thresholds("classification")) == "II"
    # a PINN's mc is a relative error: 0.05 is a barrier there, well connected for a classifier
    assert label(0.05, -0.05, 0.95, default_thresholds("pinn")) == "III"
    assert label(0.05, -0.05, 0.95, default_thresholds("classification")) == "IV-B"
    with pytest.raises(SpecError, match="phases.task must be one of classification, language_model, pinn, got 'vision'"):
        default_thresholds("vision")


def test_to_dict_round_trips_through_sorted_json() -> None:
    data = T.to_dict()
    assert list(data) == ["cka", "cka_metric", "high_loss", "mc", "mc_bound"]
    text = json.dumps(data, sort_keys=True)
    assert Thresholds(**json.loads(text)) == T


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"high_loss": 0.0}, r"phases.high_loss must be a finite number > 0, got 0.0"),
        ({"high_loss": -1}, r"phases.high_loss must be a finite number > 0, got -1"),
        ({"high_loss": math.inf}, r"phases.high_loss must be a finite number > 0, got inf"),
        ({"high_loss": "0.2"}, r"phases.high_loss must be a finite number > 0, got '0.2'"),
        ({"mc": -0.5}, r"phases.mc must be a finite number >= 0, got -0.5"),
        ({"mc": math.nan}, r"phases.mc must be a finite number >= 0, got nan"),
        ({"mc": True}, r"phases.mc must be a finite number >= 0, got True"),
        ({"cka": 1.5}, r"phases.cka must be a number in \[0, 1\], got 1.5"),
        ({"cka": -0.1}, r"phases.cka must be a number in \[0, 1\], got -0.1"),
        ({"cka": None}, r"phases.cka must be a number in \[0, 1\], got None"),
    ],
)
def test_invalid_thresholds_name_the_field(kwargs: dict, match: str) -> None:
    values = {"high_loss": 0.2, "mc": 2.0, "cka": 0.9, **kwargs}
    with pytest.raises(SpecError, match=match):
        Thresholds(**values)


def test_spec_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        Thresholds(high_loss=-1.0, mc=2.0, cka=0.9)


def test_high_loss_scales_with_the_chance_loss() -> None:
    assert default_thresholds("classification", 10).high_loss == pytest.approx(0.2, rel=1e-15)
    c100 = default_thresholds("classification", 100)
    assert c100.high_loss == pytest.approx(0.4, rel=1e-12)  # ln 100 = 2 ln 10
    assert c100.mc == 2.0 and c100.cka == 0.75  # the mixup CKA's own threshold
    assert default_thresholds("classification", 200).high_loss == pytest.approx(
        0.2 * math.log(200) / math.log(10), rel=1e-12)
    assert default_thresholds("language_model", 256).high_loss == pytest.approx(2.0, rel=1e-12)
    assert default_thresholds("pinn", 1) == default_thresholds("pinn")  # not a loss: unscaled
    with pytest.raises(SpecError, match="num_classes must be an integer >= 2, got 1"):
        default_thresholds("classification", 1)


def test_spec_overrides_replace_the_scaled_defaults() -> None:
    t = thresholds_for("classification", 100, {"mc": 1.0})
    assert (t.high_loss, t.mc, t.cka) == (pytest.approx(0.4), 1.0, 0.75)
    with pytest.raises(SpecError, match=r"unknown field\(s\) \['loss'\]"):
        thresholds_for("classification", 10, {"loss": 1.0})


def test_each_cka_metric_brings_its_own_default_threshold() -> None:
    assert CKA_THRESHOLDS == {"cka_mixup": 0.75, "cka": 0.9}
    assert default_thresholds("classification").cka_metric == "cka_mixup"
    logits = thresholds_for("classification", 10, {"cka_metric": "cka"})
    assert (logits.cka_metric, logits.cka) == ("cka", 0.9)
    mixup = thresholds_for("language_model", 256, {"cka_metric": "cka_mixup"})
    assert (mixup.cka_metric, mixup.cka) == ("cka_mixup", 0.75)
    chosen = thresholds_for("classification", 10, {"cka_metric": "cka", "cka": 0.5})
    assert chosen.cka == 0.5  # an explicit threshold wins
    with pytest.raises(SpecError, match="phases.cka_metric must be one of"):
        thresholds_for("classification", 10, {"cka_metric": "cka_softmax"})


def _row(**changes: object) -> dict:
    """A confident IV-B cell: 3 models, 3 converged pairs, every mean far from its threshold."""
    row = {"finite_fraction": 1.0, "num_models": 3, "num_pairs": 3, "num_pairs_converged": 3,
           "train_loss_mean": 0.05, "train_loss_std": 0.01,
           "train_error_mean": 0.4, "train_error_std": 0.1,
           "mc_train_error_mean": -0.5, "mc_train_error_std": 0.3,
           "cka_mixup_mean": 0.95, "cka_mixup_std": 0.01, "cka_mean": 0.5, "cka_std": 0.2}
    row.update(changes)
    return row


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, ("IV-B", True)),
    ({"num_pairs_converged": 2}, ("IV-B", False)),  # one curve fit did not converge
    ({"cka_mixup_std": 0.06}, ("IV-B", False)),  # 0.95 - 0.06 < 0.9: CKA within its spread
    ({"cka_mixup_mean": 0.85, "cka_mixup_std": 0.01}, ("IV-A", True)),
    ({"mc_train_error_mean": -1.8, "mc_train_error_std": 0.3}, ("IV-B", False)),  # near -2
    ({"mc_train_error_mean": -5.0, "mc_train_error_std": 1.0, "cka_mixup_std": 0.5},
     ("III", True)),
    ({"mc_train_error_mean": 1.8, "mc_train_error_std": 0.3}, ("IV-B", False)),  # near +2
    ({"train_loss_mean": 0.5, "mc_train_error_mean": -5.0, "mc_train_error_std": 1.0},
     ("I", True)),
    ({"train_loss_mean": 0.5, "mc_train_error_mean": 0.5, "mc_train_error_std": 1.0},
     ("II", False)),  # mc within its spread of 0 at high loss
    ({"train_loss_mean": 0.21, "train_loss_std": 0.05}, ("I", False)),  # loss near 0.2
    ({"num_pairs": 1, "num_pairs_converged": 1, "mc_train_error_std": 0.0},
     ("IV-B", False)),  # one pair: no spread to judge by
    ({"mc_train_error_mean": None, "num_pairs_converged": 0}, (None, None)),  # curve off
    ({"cka_mixup_mean": None}, (None, None)),  # similarity off: IV-A or IV-B is unknown
    ({"finite_fraction": 0.0, "train_loss_mean": None, "mc_train_error_mean": None},
     ("I", True)),  # every seed diverged
])
def test_cell_phase_and_its_confidence(changes: dict, expected: tuple) -> None:
    assert cell_phase(_row(**changes), "classification", T) == expected


def test_pinn_cells_are_labelled_by_their_error() -> None:
    pinn = Thresholds(high_loss=0.1, mc=0.02, cka=0.9)
    assert cell_phase(_row(mc_train_error_mean=-0.5), "pinn", pinn) == ("I", True)


def test_phase_columns_carry_the_thresholds_used() -> None:
    columns = phase_columns(_row(), "classification", 100, {"cka": 0.99})
    assert columns["phase"] == "IV-A" and columns["phase_confident"] is True
    assert columns["phase_cka"] == 0.99 and columns["phase_mc"] == 2.0
    assert columns["phase_high_loss"] == pytest.approx(0.4)


def test_the_old_definitions_are_options() -> None:
    ours = Thresholds(high_loss=0.2, mc=2.0, cka=0.9, cka_metric="cka", mc_bound="lower")
    assert label(0.1, 5.0, 0.99, ours) == "IV-B"  # IV bounded below only
    assert cell_phase(_row(cka_mean=0.8), "classification", ours) == ("IV-A", False)  # ± 0.2
    assert cell_phase(_row(cka_mean=0.8, cka_std=0.01), "classification", ours) == ("IV-A", True)
    assert thresholds_for("classification", 10, {"cka_metric": "cka"}).cka_metric == "cka"
    assert default_thresholds("language_model").cka_metric == "cka"  # no mixup CKA there
    with pytest.raises(SpecError, match="phases.cka_metric must be one of cka_mixup, cka, "
                                        "got 'cka_logits'"):
        thresholds_for("classification", 10, {"cka_metric": "cka_logits"})
    with pytest.raises(SpecError, match="phases.mc_bound must be one of two-sided, lower"):
        Thresholds(high_loss=0.2, mc=2.0, cka=0.9, mc_bound="upper")


UNCONVERGED = {"num_pairs_converged": 0}


@pytest.mark.parametrize(("changes", "expected"), [
    # phase IV: drift upward is capped by the ends' train error, inside |mc| < 2
    ({"mc_projected_mean": 0.4}, ("IV-B", True)),
    ({"mc_projected_mean": 2.5}, ("IV-B", False)),  # heading out of mc ≈ 0
    ({"mc_projected_mean": -2.5}, ("IV-B", False)),  # heading into a barrier
    ({"mc_projected_mean": math.inf, "mc_train_error_mean": -0.5}, ("IV-B", False)),
    # phase II: the range is open upward, so rising mc cannot move the label
    ({"train_loss_mean": 0.5, "mc_train_error_mean": 3.0, "mc_projected_mean": 9.0},
     ("II", True)),
    ({"train_loss_mean": 0.5, "mc_train_error_mean": 3.0, "mc_projected_mean": -math.inf},
     ("II", False)),  # drifting down without a limit
    # barriers: confident only while the projected limit stays past the threshold
    ({"mc_train_error_mean": -5.0, "mc_train_error_std": 1.0, "mc_projected_mean": -3.0},
     ("III", True)),
    ({"mc_train_error_mean": -5.0, "mc_train_error_std": 1.0, "mc_projected_mean": -1.5},
     ("III", False)),
    ({"mc_train_error_mean": -5.0, "mc_train_error_std": 1.0, "mc_projected_mean": math.inf},
     ("III", False)),
    ({"train_loss_mean": 0.5, "mc_train_error_mean": -4.0, "mc_train_error_std": 1.0,
      "mc_projected_mean": -0.5}, ("I", True)),
    ({"train_loss_mean": 0.5, "mc_train_error_mean": -4.0, "mc_train_error_std": 1.0,
      "mc_projected_mean": 0.5}, ("I", False)),
    ({"mc_projected_mean": math.nan}, ("IV-B", False)),  # one round: no projection
])
def test_confidence_knows_the_direction_of_drift(changes: dict, expected: tuple) -> None:
    assert cell_phase(_row(**UNCONVERGED, **changes), "classification", T) == expected


def test_lower_bound_iv_is_confident_however_far_mc_rises() -> None:
    lower = Thresholds(high_loss=0.2, mc=2.0, cka=0.9, mc_bound="lower")
    row = _row(**UNCONVERGED, mc_projected_mean=math.inf)
    assert cell_phase(row, "classification", lower) == ("IV-B", True)
