"""Graphed training steps: the functional step equals train_model; the CPU path is untouched."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

import pytest
import torch

from tests.test_trainstate import Killed, assert_identical, kill_at
from zoo import datasets
from zoo.datasets.base import DataBundle
from zoo.objective import Objective
from zoo.spec import ZooSpec
from zoo.specfile import parse_spec
from zoo.train import (STATE_JSON, StateStore, TrainedModel, build_model, load_state,
                       train_graphed, train_model, use_graphs)
from zoo.train.steps import GraphedStep, has_convolutions, prepare

TOLERANCE = 1e-10


@pytest.fixture(scope="module")
def mnist1d() -> DataBundle:
    """250 train (the last 64-batch holds 58) and 128 test rows in float64."""
    bundle = datasets.load("mnist1d")
    return DataBundle(bundle.name, bundle.info, (bundle.train[0][:250].double(),
                      bundle.train[1][:250]), (bundle.test[0][:128].double(),
                                               bundle.test[1][:128]))


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    """300 train (five 64-batches, the last of 44) and 100 test images, normalised per channel."""
    bundle = datasets.load("digits")
    return DataBundle(bundle.name, bundle.info, tuple(t[:300] for t in bundle.train),
                      tuple(t[:100] for t in bundle.test), normalization=bundle.normalization)


@pytest.fixture
def float64() -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def make_spec(family: str = "mlp", args: dict | None = None, **training: Any) -> ZooSpec:
    return parse_spec({
        "name": "graphed", "data": {"name": "mnist1d"},
        "architecture": {"family": family, "width": 8, "args": args or {"depth": 1}},
        "training": {"epochs": 2, "batch_size": 64, "weight_decay": 0.01, **training},
        "grid": {"load": {"axis": "width", "values": [8]},
                 "temperature": {"axis": "learning_rate", "values": [0.05]}},
        "seeds": [3], "checkpoints": {"every": 1},
    })


def digits_spec(family: str, args: dict, epochs: int = 5, **training: Any) -> ZooSpec:
    """Width 4, batch 64, checkpoints at 0, 2, 4 and the last epoch."""
    return parse_spec({
        "name": "graphed-resume", "data": {"name": "digits"},
        "architecture": {"family": family, "width": 4, "args": args},
        "training": {"epochs": epochs, "batch_size": 64, **training},
        "grid": {"load": {"axis": "width", "values": [4]},
                 "temperature": {"axis": "batch_size", "values": [64]}},
        "seeds": [1], "checkpoints": {"every": 2},
    })


def assert_close(ours: TrainedModel, theirs: TrainedModel, tolerance: float) -> None:
    assert [c.epoch for c in ours.checkpoints] == [c.epoch for c in theirs.checkpoints]
    for a, b in zip(ours.checkpoints, theirs.checkpoints):
        assert a.finite == b.finite
        assert list(a.state_dict) == list(b.state_dict)
        for key, value in a.state_dict.items():
            torch.testing.assert_close(value, b.state_dict[key], rtol=tolerance, atol=tolerance)
        assert a.train["loss"] == pytest.approx(b.train["loss"], rel=tolerance, abs=tolerance)


@pytest.mark.parametrize("optimizer, schedule", [("sgd", "onecycle"), ("adam", "cosine"),
                                                 ("adamw", "constant")])
def test_functional_step_equals_train_model_in_float64(mnist1d, float64, optimizer,
                                                       schedule) -> None:
    spec = make_spec(optimizer=optimizer, schedule=schedule,
                     learning_rate=0.05 if optimizer == "sgd" else 0.01)
    job = spec.jobs(mnist1d.fingerprint())[0]
    ours = train_graphed(spec, job, mnist1d, "cpu")
    assert_close(ours, train_model(spec, job, mnist1d), TOLERANCE)
    assert ours.checkpoints[-1].train["loss"] < ours.checkpoints[0].train["loss"]


def test_batch_norm_cnn_equals_train_model(mnist1d, float64) -> None:
    spec = make_spec("cnn", {"depth": 1, "batch_norm": True})
    job = spec.jobs(mnist1d.fingerprint())[0]
    ours = train_graphed(spec, job, mnist1d, "cpu")
    assert_close(ours, train_model(spec, job, mnist1d), TOLERANCE)
    assert "2.running_mean" in ours.checkpoints[-1].state_dict


def test_kept_checkpoints_are_handed_to_keep_one_at_a_time(mnist1d, float64) -> None:
    spec = make_spec()
    job = spec.jobs(mnist1d.fingerprint())[0]
    handed: dict[int, dict] = {}
    kept = train_graphed(spec, job, mnist1d, "cpu",
                         hand_off=lambda epoch, state: handed.__setitem__(epoch, state))
    whole = train_graphed(spec, job, mnist1d, "cpu")
    assert sorted(handed) == [c.epoch for c in whole.checkpoints]
    assert all(c.state_dict == {} for c in kept.checkpoints)  # held without weights
    for checkpoint in whole.checkpoints:
        state = handed[checkpoint.epoch]
        assert all(torch.equal(state[k], v) for k, v in checkpoint.state_dict.items())


def test_divergence_is_flagged(mnist1d, float64) -> None:
    poisoned = mnist1d.train[0].clone()
    poisoned[200:] = float("nan")  # a step of the first epoch meets it
    bundle = DataBundle(mnist1d.name, mnist1d.info, (poisoned, mnist1d.train[1]), mnist1d.test)
    spec = make_spec()
    job = spec.jobs(bundle.fingerprint())[0]
    ours, theirs = train_graphed(spec, job, bundle, "cpu"), train_model(spec, job, bundle)
    assert [c.finite for c in ours.checkpoints] == [c.finite for c in theirs.checkpoints]
    assert [c.finite for c in ours.checkpoints] == [False, False, False]  # train loss is NaN


def test_the_counter_on_the_device_picks_each_steps_coefficients(mnist1d, float64) -> None:
    """The step counter and finite flag live on the model's device (a captured graph advances
    them there) and the counter picks the table row: a zeroed row moves nothing."""
    spec = make_spec()
    job = spec.jobs(mnist1d.fingerprint())[0]
    model = build_model(spec, job.cell, mnist1d, job.seed)
    step = GraphedStep(model, Objective(mnist1d), spec.training, job.cell, total_steps=4)
    device = next(model.parameters()).device
    assert step.counter.device == device and step.finite.device == device
    assert step.table.shape == (4, 3)  # sgd: learning rate, momentum, weight decay per step
    step.table[1].zero_()  # the second step: learning rate, momentum, weight decay 0
    batch = (mnist1d.train[0][:64], mnist1d.train[1][:64])
    before = [p.clone() for p in step.params]
    step(batch)
    first = [p.clone() for p in step.params]
    step(batch)
    assert all(torch.equal(a, p) for a, p in zip(first, step.params))
    step(batch)
    assert not any(torch.equal(a, p) for a, p in zip(first, step.params))
    assert not any(torch.equal(a, p) for a, p in zip(before, first))
    assert int(step.counter) == 3 and not step.diverged() and not step.capture


def test_use_graphs_only_on_cuda_for_static_tasks() -> None:
    recipe = make_spec().training
    assert use_graphs(recipe, "classification", "cuda")
    assert use_graphs(recipe, "language_model", "cuda:0")
    assert not use_graphs(recipe, "classification", "cpu")
    assert not use_graphs(recipe, "pinn", "cuda")
    assert not use_graphs(replace(recipe, graphs="never"), "classification", "cuda")


def test_channels_last_only_for_convolutions_on_cuda() -> None:
    """`prepare` sets the memory format, not the device: bound for CUDA, a convolution with
    three input channels (not contiguous both ways) turns channels-last; nothing else does."""
    def conv() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))

    last = torch.channels_last
    assert has_convolutions(conv()) and not has_convolutions(torch.nn.Linear(2, 2))
    kept = prepare(conv(), "cpu")[0].weight
    assert kept.is_contiguous() and not kept.is_contiguous(memory_format=last)
    turned = prepare(conv(), "cuda")[0].weight
    assert turned.is_contiguous(memory_format=last) and not turned.is_contiguous()
    assert turned.device.type == "cpu"
    linear = prepare(torch.nn.Sequential(torch.nn.Linear(3, 4)), "cuda")[0].weight
    assert linear.is_contiguous()


@pytest.mark.parametrize("family, args, training, moments", [
    ("cnn", {"depth": 1, "batch_norm": True}, {"augmentation": "crop-flip"}, 1),  # SGD, OneCycle
    ("mlp", {"depth": 1}, {"optimizer": "adamw", "schedule": "cosine", "learning_rate": 0.01},
     2)])
def test_a_killed_graphed_run_resumes_to_the_same_weights_bit_for_bit(tmp_path, digits, family,
                                                                      args, training, moments):
    spec = digits_spec(family, args, **training)
    job = spec.jobs(digits.fingerprint())[0]
    whole = train_graphed(spec, job, digits, "cpu")
    with pytest.raises(Killed):  # epoch 3 is trained, then lost: the state is epoch 2's
        train_graphed(spec, job, digits, "cpu",
                      StateStore(tmp_path, job.model_id, on_epoch=kill_at(3)))
    store = StateStore(tmp_path, job.model_id)
    saved = load_state(store)
    assert saved.epoch == 2 and saved.scalars["diverged"] is False
    assert saved.tensors["step/counter"].tolist() == [2 * 5]  # five steps an epoch
    assert saved.tensors["step/finite"].item() is True
    assert len([k for k in saved.tensors if k.startswith("optimizer/0/")]) == moments
    assert sorted(p.name for p in store.path.iterdir()) == [
        "checkpoint-0.safetensors", "checkpoint-2.safetensors", "state-2.safetensors",
        STATE_JSON]
    assert_identical(train_graphed(spec, job, digits, "cpu", store), whole)
    assert load_state(store).epoch == 5
    assert_identical(train_graphed(spec, job, digits, "cpu", store), whole)  # nothing left


def test_a_diverged_graphed_run_resumes_diverged(tmp_path, digits):
    """A run that diverged in epoch 1 takes no step after its resume (the counter stays)."""
    poisoned = digits.train[0].clone()
    poisoned[:] = float("nan")
    bundle = DataBundle(digits.name, digits.info, (poisoned, digits.train[1]), digits.test,
                        normalization=digits.normalization)
    spec = digits_spec("mlp", {"depth": 1}, epochs=3)
    job = spec.jobs(bundle.fingerprint())[0]
    whole = train_graphed(spec, job, bundle, "cpu")
    with pytest.raises(Killed):
        train_graphed(spec, job, bundle, "cpu",
                      StateStore(tmp_path, "m", every_seconds=0, on_epoch=kill_at(2)))
    saved = load_state(StateStore(tmp_path, "m"))
    assert saved.epoch == 1 and saved.scalars["diverged"] is True
    assert saved.tensors["step/finite"].item() is False
    resumed = train_graphed(spec, job, bundle, "cpu", StateStore(tmp_path, "m"))
    assert [c.finite for c in resumed.checkpoints] == [c.finite for c in whole.checkpoints]
    assert [c.epoch for c in resumed.checkpoints] == [0, 2, 3]
    assert not any(c.finite for c in resumed.checkpoints)  # train loss is NaN from the start
    assert load_state(StateStore(tmp_path, "m")).tensors["step/counter"].tolist() == [5]


def test_augmentation_pads_with_the_normalised_raw_zero_as_train_model(digits, float64):
    """Digits are normalised per channel: a crop padding 0 instead of the raw zero would move
    the result far beyond rounding."""
    assert digits.normalization.raw_zero().abs().min() > 0.1
    bundle = DataBundle(digits.name, digits.info, (digits.train[0].double(), digits.train[1]),
                        (digits.test[0].double(), digits.test[1]),
                        normalization=digits.normalization)
    spec = digits_spec("cnn", {"depth": 1, "batch_norm": True}, epochs=2,
                       augmentation="crop-flip-rotate")
    job = spec.jobs(bundle.fingerprint())[0]
    assert_close(train_graphed(spec, job, bundle, "cpu"), train_model(spec, job, bundle),
                 TOLERANCE)


def test_train_model_on_the_cpu_never_takes_the_graphed_path(tmp_path, digits):
    """The saved state tells the paths apart (their weights may agree bit for bit on the CPU):
    torch's optimizer state, no step counter; and a graphed run's state is discarded by the
    eager path (its optimizer state differs)."""
    spec = digits_spec("mlp", {"depth": 1}, epochs=2)
    job = spec.jobs(digits.fingerprint())[0]
    eager = StateStore(tmp_path, "eager")
    train_model(spec, job, digits, device="cpu", store=eager)
    saved = load_state(eager)
    assert "optimizer/0/momentum_buffer" in saved.tensors and "step/counter" not in saved.tensors
    assert "trained_by" not in saved.scalars["identity"]
    graphed = StateStore(tmp_path, "graphed")
    train_graphed(spec, job, digits, "cpu", graphed)
    assert load_state(graphed).scalars["identity"]["trained_by"] == "graphed"
    eager_run = train_model(spec, job, digits, device="cpu", store=graphed)
    assert "graphed/state.json: saved by another run" in eager_run.notes[0]  # and discarded
    assert "trained_by" not in load_state(graphed).scalars["identity"]
