"""Graphed training steps: the functional step equals train_model; the CPU path is untouched."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

import pytest
import torch

from zoo import datasets
from zoo.datasets.base import DataBundle
from zoo.graphed import GraphedStep, has_convolutions, prepare, train_graphed, use_graphs
from zoo.spec import ZooSpec
from zoo.specfile import parse_spec
from zoo.training import TrainedModel, train_model

TOLERANCE = 1e-10


@pytest.fixture(scope="module")
def mnist1d() -> DataBundle:
    """250 train (the last 64-batch holds 58) and 128 test rows in float64."""
    bundle = datasets.load("mnist1d")
    return DataBundle(bundle.name, bundle.info, (bundle.train[0][:250].double(),
                      bundle.train[1][:250]), (bundle.test[0][:128].double(),
                                               bundle.test[1][:128]))


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


def test_divergence_is_flagged(mnist1d, float64) -> None:
    poisoned = mnist1d.train[0].clone()
    poisoned[200:] = float("nan")  # a step of the first epoch meets it
    bundle = DataBundle(mnist1d.name, mnist1d.info, (poisoned, mnist1d.train[1]), mnist1d.test)
    spec = make_spec()
    job = spec.jobs(bundle.fingerprint())[0]
    ours, theirs = train_graphed(spec, job, bundle, "cpu"), train_model(spec, job, bundle)
    assert [c.finite for c in ours.checkpoints] == [c.finite for c in theirs.checkpoints]
    assert [c.finite for c in ours.checkpoints] == [False, False, False]  # train loss is NaN


def test_step_counter_and_flag_stay_on_the_device(mnist1d, float64) -> None:
    spec = make_spec()
    job = spec.jobs(mnist1d.fingerprint())[0]
    from zoo.objective import Objective
    from zoo.training import build_model

    model = build_model(spec, job.cell, mnist1d, job.seed)
    step = GraphedStep(model, Objective(mnist1d), spec.training, job.cell, total_steps=4)
    assert step.table.shape == (4, 3)  # sgd: learning rate, momentum, weight decay per step
    for _ in range(3):
        step((mnist1d.train[0][:64], mnist1d.train[1][:64]))
    assert int(step.counter) == 3 and not step.diverged() and not step.capture


def test_cpu_path_is_the_eager_one(mnist1d) -> None:
    """On the CPU, graphs "auto" and "never" give the same bits (nothing is captured)."""
    def single(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(t.float() if t.is_floating_point() else t for t in tensors)

    bundle = DataBundle(mnist1d.name, mnist1d.info, single(mnist1d.train), single(mnist1d.test))
    auto = make_spec()
    never = replace(auto, training=replace(auto.training, graphs="never"))
    job = auto.jobs(bundle.fingerprint())[0]
    a, b = train_model(auto, job, bundle), train_model(never, job, bundle)
    for x, y in zip(a.checkpoints, b.checkpoints):
        for key in x.state_dict:
            assert torch.equal(x.state_dict[key], y.state_dict[key])


def test_use_graphs_only_on_cuda_for_static_tasks() -> None:
    recipe = make_spec().training
    assert use_graphs(recipe, "classification", "cuda")
    assert use_graphs(recipe, "language_model", "cuda:0")
    assert not use_graphs(recipe, "classification", "cpu")
    assert not use_graphs(recipe, "pinn", "cuda")
    assert not use_graphs(replace(recipe, graphs="never"), "classification", "cuda")


def test_channels_last_only_for_convolutions_on_cuda() -> None:
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    assert has_convolutions(conv) and not has_convolutions(torch.nn.Linear(2, 2))
    assert prepare(conv, "cpu")[0].weight.is_contiguous()
