"""Stacked populations: equal to one-by-one training in float64, per-member divergence, choice."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

import pytest
import torch

from zoo import datasets
from zoo.datasets.base import DataBundle
from zoo.errors import SpecError
from zoo.spec import ZooSpec
from zoo.specfile import parse_spec
from zoo.train import (TrainedModel, choose_stacking, predicted_speedup, train_cell_models,
                       train_model, train_population)
from zoo.train.cost import MIN_SPEEDUP

TOLERANCE = 1e-10


def _small(bundle: DataBundle, train: int, test: int) -> DataBundle:
    """The first `train`/`test` rows in float64 (labels unchanged)."""
    def cut(tensors: tuple[torch.Tensor, ...], rows: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[:rows].double() if t.is_floating_point() else t[:rows] for t in tensors)

    return DataBundle(bundle.name, bundle.info, cut(bundle.train, train), cut(bundle.test, test))


@pytest.fixture(scope="module")
def mnist1d() -> DataBundle:
    return _small(datasets.load("mnist1d"), 250, 128)  # 64-batches: the last has 58


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return _small(datasets.load("digits"), 190, 96)


@pytest.fixture
def float64() -> Iterator[None]:
    """Models built in float64 for the duration of one test."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def make_spec(family: str = "mlp", args: dict | None = None, learning_rates: tuple = (0.05, 0.1),
              seeds: tuple = (0, 1), data: str = "mnist1d", **training: Any) -> ZooSpec:
    """Width 8, batch 64, 3 epochs, a checkpoint each epoch; one cell per learning rate."""
    return parse_spec({
        "name": "population", "data": {"name": data},
        "architecture": {"family": family, "width": 8, "args": args or {"depth": 1}},
        "training": {"epochs": 3, "batch_size": 64, "weight_decay": 0.01, **training},
        "grid": {"load": {"axis": "width", "values": [8]},
                 "temperature": {"axis": "learning_rate", "values": list(learning_rates)}},
        "seeds": list(seeds), "checkpoints": {"every": 1},
    })


def assert_same(stacked: TrainedModel, single: TrainedModel) -> None:
    """Every checkpoint: epoch, finiteness, weights, buffers and evaluations within TOLERANCE."""
    assert stacked.job == single.job
    assert [c.epoch for c in stacked.checkpoints] == [c.epoch for c in single.checkpoints]
    for ours, theirs in zip(stacked.checkpoints, single.checkpoints):
        assert ours.finite == theirs.finite, ours.epoch
        assert list(ours.state_dict) == list(theirs.state_dict)
        for key, value in ours.state_dict.items():
            assert value.dtype == theirs.state_dict[key].dtype, key
            torch.testing.assert_close(value, theirs.state_dict[key], equal_nan=True,
                                       rtol=TOLERANCE, atol=TOLERANCE)
        for split in ("train", "test"):
            for name, value in getattr(ours, split).items():
                expected = getattr(theirs, split)[name]
                close = pytest.approx(expected, rel=TOLERANCE, abs=TOLERANCE, nan_ok=True)
                assert value == close, (split, name)


def compare(spec: ZooSpec, bundle: DataBundle) -> list[TrainedModel]:
    jobs = spec.jobs(bundle.fingerprint())
    stacked = train_population(spec, jobs, bundle)
    for model, job in zip(stacked, jobs):
        assert model.trained_by == "stacked"
        assert_same(model, train_model(spec, job, bundle))
    return stacked


@pytest.mark.parametrize("optimizer, schedule", [("sgd", "onecycle"), ("adam", "cosine"),
                                                 ("adamw", "constant"), ("sgd", "cosine")])
def test_stacked_equals_single_in_float64(mnist1d, float64, optimizer, schedule) -> None:
    spec = make_spec(optimizer=optimizer, schedule=schedule,
                     learning_rates=(0.01, 0.003) if optimizer != "sgd" else (0.05, 0.1))
    stacked = compare(spec, mnist1d)
    assert len(stacked) == 4 and all(c.finite for m in stacked for c in m.checkpoints)
    first, last = stacked[0].checkpoints[0], stacked[0].checkpoints[-1]
    assert [c.epoch for c in stacked[0].checkpoints] == [0, 1, 2, 3]
    assert last.train["loss"] < first.train["loss"]  # it trained


def test_batch_norm_cnn_equals_single(mnist1d, float64) -> None:
    spec = make_spec("cnn", {"depth": 1, "batch_norm": True})
    stacked = compare(spec, mnist1d)
    assert "2.running_mean" in stacked[0].checkpoints[-1].state_dict


def test_augmented_images_follow_each_members_generator(digits, float64) -> None:
    compare(make_spec(data="digits", augmentation="crop-flip"), digits)


def test_divergent_member_leaves_the_others_alone(mnist1d, float64) -> None:
    spec = make_spec(learning_rates=(0.05, 1e200), schedule="constant", weight_decay=0.0)
    stacked = compare(spec, mnist1d)
    healthy = [m for m in stacked if m.job.cell.learning_rate == 0.05]
    diverged = [m for m in stacked if m.job.cell.learning_rate == 1e200]
    assert all(c.finite for m in healthy for c in m.checkpoints)
    assert all(not m.checkpoints[-1].finite for m in diverged)
    assert all(m.checkpoints[0].finite for m in diverged)  # the init was fine


@pytest.mark.parametrize("family, args", [("mlp", {"depth": 1}),
                                          ("cnn", {"depth": 1, "batch_norm": True})])
def test_injected_nan_stops_one_member(mnist1d, float64, monkeypatch, family, args) -> None:
    """A NaN in one member's loss at step 2 freezes it there (BatchNorm statistics included);
    the other member trains on exactly as alone."""
    import zoo.train.stacked as stacked

    spec = make_spec(family, args, learning_rates=(0.05,))
    jobs = spec.jobs(mnist1d.fingerprint())
    calls = {"count": 0}
    original = stacked.member_losses

    def poisoned(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = original(outputs, targets)
        calls["count"] += 1
        if calls["count"] == 2:
            losses = losses + torch.tensor([float("nan"), 0.0])
        return losses

    monkeypatch.setattr(stacked, "member_losses", poisoned)
    stacked = train_population(spec, jobs, mnist1d)
    assert [c.finite for c in stacked[0].checkpoints] == [True, False, False, False]
    for checkpoint in stacked[0].checkpoints[1:]:
        assert checkpoint.state_dict.keys() == stacked[0].checkpoints[1].state_dict.keys()
        for key, value in checkpoint.state_dict.items():  # frozen after one good step
            assert torch.equal(value, stacked[0].checkpoints[1].state_dict[key])
    assert_same(stacked[1], train_model(spec, jobs[1], mnist1d))


def test_members_must_share_shape(mnist1d) -> None:
    spec = parse_spec({
        "name": "mixed", "data": {"name": "mnist1d"}, "architecture": {"family": "mlp"},
        "training": {"epochs": 1}, "seeds": [0],
        "grid": {"load": {"axis": "width", "values": [4, 8]},
                 "temperature": {"axis": "batch_size", "values": [64]}},
    })
    jobs = spec.jobs(mnist1d.fingerprint())
    with pytest.raises(ValueError, match=r"members must share width; got \[4, 8\]"):
        train_population(spec, jobs, mnist1d)
    with pytest.raises(ValueError, match="expected at least one job"):
        train_population(spec, [], mnist1d)


def test_choice_honours_the_spec_and_is_deterministic(mnist1d, float64) -> None:
    many = tuple(range(32))
    for mode, expected in (("always", True), ("never", False)):
        spec = make_spec(seeds=many, stacking=mode)
        assert choose_stacking(spec, spec.jobs(mnist1d.fingerprint()), mnist1d) is expected
    auto = make_spec(seeds=many)
    jobs = auto.jobs(mnist1d.fingerprint())
    assert choose_stacking(auto, jobs, mnist1d) is True
    assert predicted_speedup(auto, jobs, mnist1d) == predicted_speedup(auto, jobs, mnist1d)
    assert choose_stacking(auto, jobs[:1], mnist1d) is True  # the model's facts, not the count


def test_choice_declines_where_it_cannot_or_does_not_pay(mnist1d, float64) -> None:
    wide = parse_spec({
        "name": "wide", "data": {"name": "mnist1d"}, "architecture": {"family": "mlp"},
        "training": {"epochs": 1, "batch_size": 256}, "seeds": [0, 1],
        "grid": {"load": {"axis": "width", "values": [2048]},
                 "temperature": {"axis": "batch_size", "values": [256]}},
    })
    assert choose_stacking(wide, wide.jobs(mnist1d.fingerprint()), mnist1d) is False
    mixed = make_spec(learning_rates=(0.05,), seeds=(0, 1))
    jobs = mixed.jobs(mnist1d.fingerprint())
    shifted = [jobs[0], replace(jobs[1], cell=replace(jobs[1].cell, batch_size=32))]
    assert choose_stacking(mixed, shifted, mnist1d) is False
    forced = make_spec(learning_rates=(0.05,), stacking="always")
    with pytest.raises(ValueError, match="members must share batch_size"):
        choose_stacking(forced, shifted, mnist1d)


def test_choice_ignores_the_seed_count_across_the_old_boundary() -> None:
    full = datasets.load("mnist1d")
    spec = parse_spec({
        "name": "edge", "data": {"name": "mnist1d"}, "architecture": {"family": "mlp",
                                                                      "args": {"depth": 1}},
        "training": {"epochs": 2}, "seeds": [0, 1, 2],
        "grid": {"load": {"axis": "width", "values": [8]},
                 "temperature": {"axis": "batch_size", "values": [512]}},
    })
    jobs = spec.jobs(full.fingerprint())
    # the cost model applied to the cell's own seed count would flip between 2 and 3 seeds
    assert predicted_speedup(spec, jobs[:2], full) < MIN_SPEEDUP <= predicted_speedup(
        spec, jobs, full)
    assert {choose_stacking(spec, jobs[:k], full) for k in (1, 2, 3)} == {True}


@pytest.mark.parametrize("data,args", [("mnist1d", {"depth": 1}), ("mnist1d", {"depth": 3}),
                                       ("digits", {"depth": 2})])
def test_an_mlps_counted_flops_are_flop_counter_modes(data, args) -> None:
    """The cost model counts an MLP's FLOPs without FlopCounterMode, to the same number."""
    from torch.utils.flop_counter import FlopCounterMode

    from zoo.train import build_model
    from zoo.train.cost import model_shape

    bundle = datasets.load(data)
    spec = make_spec(args=args, data=data)
    job = spec.jobs(bundle.fingerprint())[0]
    model = build_model(spec, job.cell, bundle, job.seed)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(bundle.train[0][:1])
    shape = model_shape(model, bundle)
    assert shape.path == "linear" and shape.flops == counter.get_total_flops() > 0


def test_a_member_is_the_same_in_a_population_of_any_size(mnist1d, float64) -> None:
    spec = make_spec(seeds=(0, 1, 2), epochs=1)
    jobs = spec.jobs(mnist1d.fingerprint())
    alone = train_population(spec, jobs[:1], mnist1d)[0]
    among = train_population(spec, jobs, mnist1d)[0]
    for ours, theirs in zip(alone.checkpoints, among.checkpoints, strict=True):
        assert all(torch.equal(value, theirs.state_dict[key])
                   for key, value in ours.state_dict.items())


def test_pinn_is_never_stacked() -> None:
    bundle = datasets.load("convection")
    spec = parse_spec({
        "name": "pde", "data": {"name": "convection"}, "architecture": {"family": "pinn-mlp"},
        "training": {"epochs": 1, "stacking": "always"}, "seeds": [0, 1],
        "grid": {"load": {"axis": "beta", "values": [1.0]},
                 "temperature": {"axis": "learning_rate", "values": [0.01]}},
    })
    with pytest.raises(ValueError, match="task 'pinn' cannot be stacked"):
        choose_stacking(spec, spec.jobs(bundle.fingerprint()), bundle)


def test_train_cell_models_records_how(mnist1d, float64) -> None:
    for mode, how in (("always", "stacked"), ("never", "single")):
        spec = make_spec(learning_rates=(0.05,), stacking=mode, epochs=1)
        models = train_cell_models(spec, spec.jobs(mnist1d.fingerprint()), mnist1d)
        assert [m.trained_by for m in models] == [how, how]


def test_spec_refuses_unknown_stacking() -> None:
    with pytest.raises(SpecError, match="training.stacking: 'sometimes' is not allowed"):
        make_spec(stacking="sometimes")


@pytest.mark.parametrize("batch_norm", [False, True])
def test_a_population_step_without_host_reads_gives_the_same_bits(batch_norm) -> None:
    """What accelerators run (masks always applied, `active` never read) equals the CPU's
    step, with one member stopped before and one whose loss turns non-finite now."""
    import copy

    from zoo.train import build_model
    from zoo.train.optimizers import PopulationOptimizer, schedule_table
    from zoo.train.stacked import Population, population_step

    bundle = datasets.load("mnist1d")
    family = {"family": "cnn", "args": {"batch_norm": True}} if batch_norm else \
        {"family": "mlp", "args": {"depth": 1}}
    spec = parse_spec({"name": "s", "data": {"name": "mnist1d"}, "architecture": family,
                       "grid": {"load": {"axis": "width", "values": [4]},
                                "temperature": {"axis": "batch_size", "values": [16]}},
                       "seeds": 4})
    jobs = spec.jobs(bundle.fingerprint())
    members = [build_model(spec, job.cell, bundle, job.seed) for job in jobs]
    inputs = bundle.train[0][:16].expand(4, 16, *bundle.train[0].shape[1:]).clone()
    inputs[3, 0] = float("nan")  # member 3's loss is not finite at this step
    batch = [inputs, bundle.train[1][:16].expand(4, 16).clone()]
    results = []
    for sync in (True, False):
        population = Population(copy.deepcopy(members))
        table = schedule_table(spec.training, jobs, 10, next(iter(population.params.values())))
        optimizer = PopulationOptimizer("sgd", population.params, table)
        active = torch.tensor([True, False, True, True])
        alive = population_step(population, optimizer, batch, active, 0, sync)
        results.append((alive, population.params, population.buffers, optimizer.state))
    (alive, *cpu), (no_sync_alive, *no_sync) = results
    assert alive.tolist() == no_sync_alive.tolist() == [True, False, True, False]
    for ours, theirs in zip(cpu, no_sync):
        for key in ours:
            values = ours[key] if isinstance(ours[key], list) else [ours[key]]
            others = theirs[key] if isinstance(theirs[key], list) else [theirs[key]]
            for a, b in zip(values, others):
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=key)
