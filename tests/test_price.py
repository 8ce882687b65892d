"""`zoo price`: the arithmetic of the prediction, synthetic data of a folder set, the CLI."""

from __future__ import annotations

import json
import math
from itertools import combinations

import pytest
import torch

from generators.cli import main
from generators.price import (PricedTask, data_shape, kept_epochs, planner_bundle, predict,
                              price, steps_per_model, timing_rows)
from generators.steptimes import ShapeTiming
from tests.conftest import write_spec
from zoo.errors import ZooError
from zoo.specfile import load_spec, parse_spec

SPEC = {
    "name": "price", "architecture": {"family": "mlp", "args": {"depth": 1}},
    "data": {"name": "mnist1d"}, "training": {"epochs": 3},
    "grid": {"load": {"axis": "width", "values": [4, 8]},
             "temperature": {"axis": "batch_size", "values": [64, 500]}},
    "seeds": [0, 1, 2], "checkpoints": {"every": 1},
    "metrics": {"epochs": ["last"], "hessian": {"batches": 2, "batch_size": 32, "max_iter": 5},
                "similarity": {"batches": 2, "batch_size": 64},
                "curve": {"steps": 10, "batch_size": 64, "points": 3}},
}


def _timing(width: int, batch: int) -> ShapeTiming:
    """Made-up seconds, distinct per shape, so every sum below is checked exactly."""
    return ShapeTiming(width, batch, 100 * width, eager_step=1e-3 * width + 1e-5 * batch,
                       step=5e-4 * width, evaluation_per_sample=1e-6 * width,
                       checkpoint=0.01 * width, checkpoint_published=0.02 * width)


def test_predict_is_step_time_times_steps_and_so_on() -> None:
    spec = parse_spec(SPEC)
    jobs = spec.jobs("fp")
    cells = [jobs[i:i + 3] for i in range(0, 12, 3)]
    tasks = [PricedTask(c[0].cell.width, c[0].cell.batch_size, i == 0, tuple(c))
             for i, c in enumerate(cells)]  # the first cell stacked, the others one by one
    timings = {(w, b): _timing(w, b) for w in (4, 8) for b in (64, 500)}
    populations = {(4, 64, 3): 0.002}
    measured = {4: (0.5, 2.0), 8: (1.5, 4.0)}  # seconds of a model's and a pair's metrics
    train, test = 4000, 1000
    hours = predict(spec, tasks, timings, populations, measured, train, test)
    steps = {64: math.ceil(4000 / 64) * 3, 500: 8 * 3}
    assert steps_per_model(spec, jobs[0], train) == steps[64] and kept_epochs(spec) == 4
    ours = 0.002 * steps[64] + 3 * (5e-4 * 4 * steps[500] + 5e-4 * 8 * (steps[64] + steps[500]))
    published = 3 * sum(timings[w, b].eager_step * steps[b] for w, b in timings)
    evaluation = 3 * 4 * (4000 + 1000) * sum(1e-6 * w for w, _ in timings)
    checkpoints = 3 * 4 * sum(0.01 * w for w, _ in timings)
    assert len(list(combinations(spec.seeds, 2))) == 3
    metrics = 2 * (3 * 0.5 + 3 * 2.0) + 2 * (3 * 1.5 + 3 * 4.0)  # two cells of each width
    expected = {"ours": (ours, evaluation, checkpoints, metrics),
                "published": (published, evaluation, 2 * checkpoints, metrics)}
    for way, parts in expected.items():
        got = hours[way]
        for name, seconds in zip(("training", "evaluation", "checkpoints", "metrics"), parts):
            assert got[f"{name}_hours"] == pytest.approx(seconds / 3600, rel=1e-12), (way, name)
        assert got["total_hours"] == pytest.approx(sum(parts) / 3600, rel=1e-12)


def test_folder_data_set_is_priced_without_its_files() -> None:
    spec = load_spec("resnet18-cifar10")
    assert spec.data.root is None
    shape = data_shape(spec, rows=16)
    assert (shape.num_train, shape.num_test) == (50_000, 10_000)
    assert shape.sample.train[0].shape == (16, 3, 32, 32)
    assert int(shape.sample.train[1].max()) < 10
    stretched = planner_bundle(shape)
    assert stretched.num_train == 50_000 and stretched.train[0].stride(0) == 0  # no memory
    assert timing_rows(spec) == 1280  # BatchNorm re-estimation rows beat batch 1024, 640 probes


def test_cli_prices_a_tiny_zoo_and_the_json_adds_up(tmp_path, capsys) -> None:
    path = write_spec(tmp_path, **{**SPEC, "training": {"epochs": 1}, "seeds": [0, 1]})
    out = tmp_path / "price.json"
    assert main(["price", str(path), "--steps", "2", "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert "ratio (published / ours)" in printed and f"{result['ratio']:.2f}x" in printed
    assert result["device"] == "cpu" and result["steps_timed"] == 2 and result["models"] == 8
    assert (result["num_train"], result["num_test"], result["kept_epochs"]) == (4000, 1000, 2)
    shapes = {(s["width"], s["batch_size"]): s for s in result["shapes"]}
    assert set(shapes) == {(4, 64), (4, 500), (8, 64), (8, 500)}
    assert all(s["step"] == s["eager_step"] > 0 for s in shapes.values())  # no graphs on CPU
    stacked = {(p["width"], p["batch_size"], p["members"]): p["step"]
               for p in result["populations"]}
    ours = published = 0.0
    for task in result["tasks"]:
        shape, steps = shapes[task["width"], task["batch_size"]], task["steps_per_model"]
        assert steps == math.ceil(4000 / task["batch_size"])
        if task["stacked"]:
            ours += stacked[task["width"], task["batch_size"], task["models"]] * steps
        else:
            ours += shape["step"] * steps * task["models"]
        published += shape["eager_step"] * steps * task["models"]
    assert result["ours"]["training_hours"] == pytest.approx(ours / 3600, rel=1e-9)
    assert result["published"]["training_hours"] == pytest.approx(published / 3600, rel=1e-9)
    checkpoints = sum(2 * 2 * s["checkpoint_published"] for s in shapes.values())
    assert result["published"]["checkpoints_hours"] == pytest.approx(checkpoints / 3600)
    metrics = {m["width"]: m for m in result["metrics"]}
    assert set(metrics) == {4, 8} and all(m["model"] > 0 and m["pair"] > 0
                                          for m in metrics.values())
    expected = sum(2 * metrics[w]["model"] + metrics[w]["pair"] for w in (4, 4, 8, 8))
    assert result["ours"]["metrics_hours"] == pytest.approx(expected / 3600)
    assert result["published"]["metrics_hours"] == result["ours"]["metrics_hours"]
    for way in ("ours", "published"):
        parts = [result[way][f"{p}_hours"] for p in ("training", "evaluation", "checkpoints",
                                                       "metrics")]
        assert result[way]["total_hours"] == pytest.approx(sum(parts))
    assert result["ratio"] == pytest.approx(result["published"]["total_hours"]
                                            / result["ours"]["total_hours"])


def test_bad_steps_and_missing_cuda_are_named(tmp_path, capsys) -> None:
    path = write_spec(tmp_path, **SPEC)
    assert main(["price", str(path), "--steps", "0"]) == 2
    assert "--steps: 0 is not allowed" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["price", str(path), "--device", "cuda"]) == 2
        assert "--device cuda: torch sees no CUDA device" in capsys.readouterr().err
    with pytest.raises(ZooError, match="--steps: -1 is not allowed"):
        price(parse_spec(SPEC), steps=-1)


def test_price_on_cuda_stacks_what_generate_on_cuda_stacks(tmp_path) -> None:
    from generators.plan import make_plan, plan_tasks
    from generators.price import plan_priced_tasks

    spec = load_spec("demo")
    bundle = planner_bundle(data_shape(spec, timing_rows(spec)))
    generate = plan_tasks(make_plan(spec, "fp", tmp_path / "zoo"), bundle, 1, "cuda")
    expected = sorted((t.cells[0][0].cell.width, t.cells[0][0].cell.batch_size, t.stacked)
                      for t in generate)
    for device in ("cpu", "cuda"):
        priced = plan_priced_tasks(spec, bundle, device, 1)
        got = sorted((t.width, t.batch_size, t.stacked) for t in priced)
        assert (got == expected) == (device == "cuda"), device
    assert all(stacked for *_, stacked in expected) and len(expected) == 9


def test_a_curve_without_steps_is_priced_at_every_round_of_its_epochs(tmp_path) -> None:
    from generators.steptimes import priced_curve_steps

    published = load_spec("resnet18-cifar10")  # curve: rounds of 10 epochs, no `steps`
    assert published.metrics.curve.steps is None
    rounds = published.metrics.curve.max_rounds
    assert priced_curve_steps(published, 50_000) == rounds * 10 * math.ceil(50_000 / 128)
    demo = load_spec("demo")  # curve: rounds of 1500 steps
    assert priced_curve_steps(demo, 4000) == demo.metrics.curve.max_rounds * 1500
    raw = {**SPEC, "training": {"epochs": 1}, "seeds": [0, 1],
           "grid": {**SPEC["grid"], "load": {"axis": "width", "values": [4]},
                    "temperature": {"axis": "batch_size", "values": [500]}},
           "metrics": {**SPEC["metrics"], "curve": {"epochs": 1, "batch_size": 500,
                                                    "points": 3, "max_rounds": 2}}}
    result = price(parse_spec(raw), steps=2, stream=None)
    (metrics,) = result["metrics"]
    assert metrics["pair"] > 0 and result["ours"]["metrics_hours"] > 0
