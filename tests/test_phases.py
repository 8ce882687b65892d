"""Phase labels: every branch, the defaults and the threshold validation."""

from __future__ import annotations

import json
import math

import pytest

from zoo.errors import SpecError
from zoo.phases import PHASES, Thresholds, default_thresholds, label

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
        (0.1, 5.0, 0.99, "IV-B"),  # large positive mc at low loss: still IV
        (0.2, 0.0, 0.95, "IV-B"),  # loss at the threshold is low
        (NAN, 1.0, 0.95, "I"),  # diverged
        (0.5, NAN, 0.95, "I"),  # a diverged curve counts as a barrier
        (0.1, NAN, 0.95, "III"),
        (0.1, 0.0, NAN, "IV-A"),  # undefined CKA counts as low
    ],
)
def test_every_branch(train_loss: float, mc: float, cka: float, expected: str) -> None:
    assert label(train_loss, mc, cka, T) == expected
    assert expected in PHASES


def test_label_reaches_exactly_the_five_phases_of_yang_et_al() -> None:
    seen = {label(loss, mc, cka, T) for loss in (0.05, 0.5, math.nan)
            for mc in (-10.0, 0.0, 10.0, math.nan) for cka in (0.1, 0.95, math.nan)}
    assert seen == set(PHASES) and len(PHASES) == 5


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
    assert list(data) == ["cka", "high_loss", "mc"]
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
