"""`--gpus-per-task auto`: the memory estimate, the fraction it picks, and the flag."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from generators.cli import build_parser
from generators.executor import Task
from generators.packing import (CUDA_CONTEXT, FLOAT_BYTES, FRACTIONS, HESSIAN_GRAPH_FACTOR,
                                HESSIAN_PROBE_FACTOR, TaskShape, auto_gpus_per_task,
                                gpu_fraction, hessian_bytes, shape_of, task_bytes)
from zoo import datasets
from zoo.errors import ZooError
from zoo.metrics.hessian_memory import (LANCZOS_WORK_VECTORS, PROBE_BLOCK,
                                        TRACE_PROBE_VECTORS, TRACE_WORK_VECTORS)
from zoo.specfile import load_spec, parse_spec
from zoo.train import build_model

GIB = 2**30


def _metrics(hessian: bool = True, curve: bool = True, micro_batch_size: int = 128,
             **fields):
    return parse_spec({"name": "m", "architecture": {"family": "mlp"}, "data": {"name": "digits"},
                       "grid": {"load": {"axis": "width", "values": [4]},
                                "temperature": {"axis": "batch_size", "values": [8]}},
                       "metrics": {"hessian": {"enabled": hessian, "batches": 10,
                                               "batch_size": 64,
                                               "micro_batch_size": micro_batch_size, **fields},
                                   "curve": {"enabled": curve, "batch_size": 128}}}).metrics


def test_task_bytes_is_the_largest_phase_on_top_of_what_stays() -> None:
    shape = TaskShape(parameters=1000, activations=100, members=4, batch_size=32,
                      optimizer_states=1, seeds=3, data_values=5000)
    resident = CUDA_CONTEXT + 5000 * 4 + 3 * 1000 * 4
    training = 4 * (1000 * 4 * 3 + 32 * 100 * 4 * 2.5)
    hessian = (128 * 100 * (2.32 + 1.01)  # the eigenvalue's micro-batch beats the trace's
               + (100 + LANCZOS_WORK_VECTORS) * 1000) * 4  # and its basis: one a product
    curve = 1000 * 4 * 9 + 128 * 100 * 4 * 2.5
    assert task_bytes(shape, _metrics()) == int(resident + max(training, hessian, curve))
    assert task_bytes(shape, _metrics(hessian=False)) == int(resident + max(training, curve))
    evaluation = 1024 * 100 * 4 * 0.1
    lone = TaskShape(1000, 100, 1, 1, 2, 1, 0)
    assert task_bytes(lone, _metrics(False, True)) == int(CUDA_CONTEXT + 4000 + max(
        1000 * 4 * 4 + 100 * 4 * 2.5, evaluation))  # one seed: no curve


# ResNet-18 on CIFAR-10 as shape_of counts it: (parameters, activations) by width, data values
RESNET18 = {64: (11_173_962, 1_229_322), 256: (178_585_866, 4_917_258)}
CIFAR10_VALUES = 184_380_000


def test_the_hessian_factors_fit_the_measured_resnet18_peaks() -> None:
    """Width 64, all 10 x 64 probe samples at once: eigenvalue (one probe) 10.5 GB and trace
    (ten probes) 39.2 GB measured on an H100."""
    samples = 640 * RESNET18[64][1] * FLOAT_BYTES
    assert samples * (HESSIAN_GRAPH_FACTOR + HESSIAN_PROBE_FACTOR) / 1e9 == pytest.approx(
        10.5, rel=0.02)
    assert samples * (HESSIAN_GRAPH_FACTOR + PROBE_BLOCK * HESSIAN_PROBE_FACTOR) / 1e9 == \
        pytest.approx(39.2, rel=0.02)


@pytest.mark.parametrize("micro_batch_size", [1, 8, 64, 128, 640, 4096])
def test_the_hessian_estimate_follows_the_micro_batch(micro_batch_size) -> None:
    hessian = _metrics(micro_batch_size=micro_batch_size).hessian
    graph = min(micro_batch_size, 640)  # the eigenvalue's micro-batch, one vector
    probes = min(PROBE_BLOCK, micro_batch_size)
    trace = micro_batch_size // probes * (HESSIAN_GRAPH_FACTOR + probes * HESSIAN_PROBE_FACTOR)
    eigenvalue = graph * (HESSIAN_GRAPH_FACTOR + HESSIAN_PROBE_FACTOR)
    vectors = {"eigenvalue": 100 + LANCZOS_WORK_VECTORS,  # max_iter 100 < the budget's basis
               "trace": probes * TRACE_PROBE_VECTORS + TRACE_WORK_VECTORS}
    expected = max(eigenvalue * 100 + vectors["eigenvalue"] * 10,
                   trace * 100 + vectors["trace"] * 10) * 4
    assert hessian_bytes(10, 100, hessian) == int(expected)
    assert hessian_bytes(10, 100, _metrics(micro_batch_size=2 * micro_batch_size).hessian) >= \
        hessian_bytes(10, 100, hessian)


def test_the_vector_budget_bounds_the_estimate_of_a_large_model() -> None:
    """A model of 1e6 parameters (4 MB a vector) under a 60 MB budget: 15 vectors, so a basis
    of 15 - 6 = 9 instead of 100 and 2 probes at once instead of 10."""
    bounded = _metrics(vector_memory_gb=0.06).hessian
    unbounded = _metrics(vector_memory_gb=1e6).hessian
    vector = 10**6 * FLOAT_BYTES
    eigenvalue = 128 * (HESSIAN_GRAPH_FACTOR + HESSIAN_PROBE_FACTOR) * FLOAT_BYTES
    assert hessian_bytes(10**6, 1, unbounded) == int(eigenvalue + 106 * vector)
    assert hessian_bytes(10**6, 1, bounded) == int(eigenvalue + 15 * vector)
    short = _metrics(vector_memory_gb=0.06, max_iter=1).hessian  # one product: the trace's
    trace = 128 // 2 * (HESSIAN_GRAPH_FACTOR + 2 * HESSIAN_PROBE_FACTOR) * FLOAT_BYTES
    assert hessian_bytes(10**6, 1, short) == int(
        trace + (2 * TRACE_PROBE_VECTORS + TRACE_WORK_VECTORS) * vector)


def test_resnet18_width256_metrics_fit_20gb_only_with_the_vector_budget() -> None:
    """The published spec at width 256 peaked at 37.8 GB on an H200 before the bound; with
    the default budget (8 GB of vectors) the estimate of its metrics is under 20 GB."""
    spec = load_spec("resnet18-cifar10")
    assert spec.metrics.hessian.vector_memory_gb == 8.0
    parameters, activations = RESNET18[256]
    shape = TaskShape(parameters, activations, 1, 1, 1, len(spec.seeds), CIFAR10_VALUES)
    bounded = task_bytes(shape, spec.metrics)  # batch 1: the metrics, not training, decide
    assert bounded <= 20e9
    free = replace(spec.metrics, hessian=replace(spec.metrics.hessian, vector_memory_gb=1e6))
    assert task_bytes(shape, free) > 37.8e9


def test_auto_sizes_every_task_of_the_published_resnet18_zoo() -> None:
    """No task of resnet18-cifar10 is refused on an 80 GiB GPU; width 64 takes under half."""
    spec = load_spec("resnet18-cifar10")
    fractions = {}
    for width, (parameters, activations) in RESNET18.items():
        for batch in spec.temperature_axis.values:
            shape = TaskShape(parameters, activations, 1, int(batch), 1, len(spec.seeds),
                              CIFAR10_VALUES)
            fractions[width, batch] = gpu_fraction(task_bytes(shape, spec.metrics), 80 * GIB)
    assert max(f for (w, _), f in fractions.items() if w == 64) < 1 / 2
    assert fractions[256, 128] == 1 / 2  # the metrics' ~20 GB with headroom: over a quarter


@pytest.mark.parametrize("needed_gib, fraction", [(1, 1 / 16), (4.2, 1 / 8), (8, 1 / 8),
                                                  (9, 1 / 4), (30, 1 / 2), (60, 1.0)])
def test_gpu_fraction_is_the_smallest_that_holds_the_task(needed_gib, fraction) -> None:
    assert gpu_fraction(int(needed_gib * GIB), 80 * GIB) == fraction
    assert fraction in FRACTIONS


def test_a_task_larger_than_the_gpu_is_refused() -> None:
    with pytest.raises(ZooError, match=r"a task needs ~70.0 GiB, more than the GPU's 80.0 GiB"):
        gpu_fraction(70 * GIB, 80 * GIB)


def _outputs(model: torch.nn.Module) -> int:
    """Leaf-module output values of one digits sample."""
    total, x = 0, torch.zeros(1, 1, 8, 8)
    for layer in model:
        x = layer(x)
        total += x.numel()
    return total


def test_auto_counts_the_population_of_each_task() -> None:
    bundle = datasets.load("digits")
    spec = parse_spec({"name": "p", "architecture": {"family": "mlp"}, "data": {"name": "digits"},
                       "grid": {"load": {"axis": "width", "values": [4, 4096]},
                                "temperature": {"axis": "batch_size", "values": [8]}},
                       "seeds": 4})
    jobs = spec.jobs(bundle.fingerprint())
    small, large = tuple(jobs[:4]), tuple(jobs[4:])
    one = shape_of(spec, small, False, bundle)
    assert (one.members, one.seeds, one.batch_size, one.optimizer_states) == (1, 4, 8, 1)
    model = build_model(spec, small[0].cell, bundle, 0)
    assert one.parameters == sum(p.numel() for p in model.parameters())
    assert one.activations == _outputs(model)
    assert one.data_values == sum(t.numel() for t in (*bundle.train, *bundle.test))
    assert shape_of(spec, small, True, bundle).members == 4
    tiny = auto_gpus_per_task(spec, [Task((small,), True)], bundle, 80 * GIB)
    assert tiny == 1 / 16
    assert auto_gpus_per_task(spec, [Task((small,), True), Task((large,), True)], bundle,
                              16 * GIB) == 1.0  # the largest task decides (~100 of its
    #   17M-value vectors for the Hessian: 7.6 GiB)


def test_the_flag_takes_a_fraction_or_auto(capsys) -> None:
    parser = build_parser()
    assert parser.parse_args(["generate", "x", "--gpus-per-task", "auto"]).gpus_per_task == "auto"
    assert parser.parse_args(["generate", "x", "--gpus-per-task", "0.25"]).gpus_per_task == 0.25
    for bad in ("half", "-1", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["generate", "x", "--gpus-per-task", bad])
        assert "is neither a fraction >= 0 (e.g. 0.25) nor auto" in capsys.readouterr().err
