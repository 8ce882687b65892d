"""Resume inside a model: a run killed after some epochs and resumed equals an uninterrupted one."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
import torch

from zoo import datasets
from zoo.datasets.base import DataBundle
from zoo.errors import TrainStateError
from zoo.spec import ZooSpec
from zoo.specfile import parse_spec
from zoo.train import (STATE_JSON, StateStore, TrainedModel, load_state, save_state,
                       train_model, train_population)


class Killed(Exception):
    """Raised from a store's hook: the run dies as a killed worker would."""


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    bundle = datasets.load("digits")
    return DataBundle(bundle.name, bundle.info, tuple(t[:300] for t in bundle.train),
                      tuple(t[:100] for t in bundle.test))


def make_spec(family: str = "resnet18", epochs: int = 5, **training: Any) -> ZooSpec:
    """Width 2, batch 64, checkpoints at 0, 2, 4 and the last epoch; two seeds, one cell."""
    return parse_spec({
        "name": "resume", "data": {"name": "digits"},
        "architecture": {"family": family, "width": 2},
        "training": {"epochs": epochs, "batch_size": 64, **training},
        "grid": {"load": {"axis": "width", "values": [2]},
                 "temperature": {"axis": "batch_size", "values": [64]}},
        "seeds": [0, 1], "checkpoints": {"every": 2},
    })


def kill_at(epoch: int):
    def hook(finished: int) -> None:
        if finished == epoch:
            raise Killed(f"killed after epoch {epoch}")
    return hook


def assert_identical(resumed: TrainedModel, whole: TrainedModel) -> None:
    """Every checkpoint: epoch, key order, every tensor (torch.equal), evaluations, finiteness."""
    assert [c.epoch for c in resumed.checkpoints] == [c.epoch for c in whole.checkpoints]
    for ours, theirs in zip(resumed.checkpoints, whole.checkpoints):
        assert list(ours.state_dict) == list(theirs.state_dict)
        for key, value in ours.state_dict.items():
            assert torch.equal(value, theirs.state_dict[key]), (ours.epoch, key)
        assert (ours.train, ours.test, ours.finite) == (theirs.train, theirs.test, theirs.finite)
    assert resumed.trained_by == whole.trained_by


@pytest.mark.parametrize("family, training", [
    ("resnet18", {"augmentation": "crop-flip"}),  # SGD momentum, OneCycle, BatchNorm, draws
    ("mlp", {"optimizer": "adamw", "schedule": "cosine", "learning_rate": 0.01})])
def test_a_killed_model_resumes_to_the_same_weights_bit_for_bit(tmp_path, digits, family,
                                                                training):
    spec = make_spec(family, **training)
    job = spec.jobs(digits.fingerprint())[0]
    whole = train_model(spec, job, digits)
    with pytest.raises(Killed):  # epoch 3 is trained, then lost: the state is epoch 2's
        train_model(spec, job, digits, store=StateStore(tmp_path, job.model_id,
                                                        on_epoch=kill_at(3)))
    store = StateStore(tmp_path, job.model_id)
    assert load_state(store).epoch == 2
    assert sorted(p.name for p in store.path.iterdir()) == [
        "checkpoint-0.safetensors", "checkpoint-2.safetensors", "state-2.safetensors",
        STATE_JSON]
    assert_identical(train_model(spec, job, digits, store=store), whole)
    assert load_state(store).epoch == 5  # the last epoch is kept, so saved
    assert_identical(train_model(spec, job, digits, store=store), whole)  # nothing left to do
    store.clear()
    assert not store.path.exists()


def test_time_based_saves_between_kept_epochs(tmp_path, digits):
    spec = make_spec(family="mlp", epochs=4)
    job = spec.jobs(digits.fingerprint())[1]
    whole = train_model(spec, job, digits)
    with pytest.raises(Killed):
        train_model(spec, job, digits, store=StateStore(tmp_path, "m", every_seconds=0,
                                                        on_epoch=kill_at(2)))
    store = StateStore(tmp_path, "m")
    assert load_state(store).epoch == 1  # not a kept epoch: saved because time was up
    assert [p.name for p in store.path.glob("state-*")] == ["state-1.safetensors"]
    assert_identical(train_model(spec, job, digits, store=store), whole)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_a_killed_population_resumes_to_the_same_weights_bit_for_bit(tmp_path, digits, family):
    spec = make_spec(family=family, augmentation="flip")
    jobs = spec.jobs(digits.fingerprint())
    whole = train_population(spec, jobs, digits)
    with pytest.raises(Killed):
        train_population(spec, jobs, digits, store=StateStore(tmp_path, "cell",
                                                              on_epoch=kill_at(4 + 1)))
    store = StateStore(tmp_path, "cell")
    assert load_state(store).epoch == 4
    for resumed, one in zip(train_population(spec, jobs, digits, store=store), whole):
        assert resumed.job == one.job
        assert_identical(resumed, one)


def test_a_state_of_another_run_is_discarded_and_the_model_trained_from_scratch(tmp_path, digits):
    spec = make_spec(family="mlp", epochs=2)
    first, second = spec.jobs(digits.fingerprint())
    train_model(spec, first, digits, store=StateStore(tmp_path, "shared"))
    retrained = train_model(spec, second, digits, store=StateStore(tmp_path, "shared"))
    [note] = retrained.notes
    assert re.fullmatch(r".*shared/state\.json: saved by another run .*; discarded, trained "
                        r"again from scratch", note), note
    assert_identical(retrained, train_model(spec, second, digits))
    assert load_state(StateStore(tmp_path, "shared")).scalars["identity"]["model_id"] == \
        second.model_id


def test_an_unreadable_state_is_named_and_discarded(tmp_path, digits):
    spec = make_spec(family="mlp", epochs=2)
    job = spec.jobs(digits.fingerprint())[0]
    store = StateStore(tmp_path, job.model_id)
    train_model(spec, job, digits, store=store)
    body = json.loads((store.path / STATE_JSON).read_text())
    (store.path / body["file"]).write_bytes(b"not safetensors")
    with pytest.raises(TrainStateError, match=rf"{job.model_id}/state.json: unreadable.*"
                                              rf"sha256 differs"):
        load_state(store)
    retrained = train_model(spec, job, digits, store=store)
    assert "unreadable training state" in retrained.notes[0]
    assert_identical(retrained, train_model(spec, job, digits))
    (store.path / STATE_JSON).write_text(json.dumps({**body, "format_version": 99}))
    with pytest.raises(TrainStateError, match="format version 99, this code reads 2"):
        load_state(store)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"key": ""}, "key must be a plain file name, got ''"),
    ({"key": "a/b"}, "key must be a plain file name, got 'a/b'"),
    ({"key": "m", "every_seconds": -1}, "every_seconds must be a number >= 0, got -1")])
def test_bad_stores_are_rejected(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        StateStore(tmp_path, **kwargs)


def test_save_and_load_round_trip_every_value(tmp_path):
    store = StateStore(tmp_path, "run")
    tensors = {"weight": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
               "rng": torch.Generator().manual_seed(3).get_state(),
               "active": torch.tensor([True, False])}
    facts = {"train": {"loss": math.nan, "accuracy": None}, "test": {"loss": math.inf},
             "finite": False}
    store.path.mkdir()
    (store.path / "checkpoint-1.safetensors").write_bytes(b"left by a run killed while saving")
    scalars = {"step": 7, "rates": [0.1, 1e-300, 1 / 3]}
    save_state(store, 1, tensors, scalars, [(1, {"w": torch.full((2,), 1 / 3)}, facts)])
    state = load_state(store)
    assert state.epoch == 1 and state.scalars == scalars
    assert state.tensors.keys() == tensors.keys()
    for key, value in tensors.items():
        assert state.tensors[key].dtype == value.dtype and torch.equal(state.tensors[key], value)
    [(epoch, kept, read)] = state.checkpoints
    assert epoch == 1 and torch.equal(kept["w"], torch.full((2,), 1 / 3))
    assert math.isnan(read["train"]["loss"]) and read["train"]["accuracy"] is None
    assert read["test"]["loss"] == math.inf and read["finite"] is False
    save_state(store, 2, tensors, scalars, [(1, {"w": torch.zeros(2)}, facts)])
    assert sorted(p.name for p in store.path.glob("*.safetensors")) == [
        "checkpoint-1.safetensors", "state-2.safetensors"]
    assert torch.equal(load_state(store).checkpoints[0][1]["w"], torch.full((2,), 1 / 3))
