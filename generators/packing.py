"""`--gpus-per-task auto`: the GPU fraction a task asks Ray for, from a memory estimate.

A task's peak is the largest of its phases (training its population, then per model the
Hessian products and the curve of each seed pair) on top of what stays resident (the data set,
the CUDA context, the restored models of its cells). The Hessian products stream over
micro-batches (`metrics.hessian.micro_batch_size`), so their memory follows a micro-batch:
the gradient graph of the samples differentiated at once, plus the backward of each (sample,
probe) pair; on top come the parameter-sized vectors (the Lanczos basis, a block of trace
probes), bounded by `metrics.hessian.vector_memory_gb` (`zoo.metrics.hessian_memory`). The
factors are fitted to the ResNet-18 peaks measured on an H100 (eigenvalue
10.5 GB and trace 39.2 GB over all 640 probe samples at once at width 64, one and ten probes;
curve 13.0 GB at width 256, a training epoch 9.9 GB at width 256 batch 128).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from generators.executor import Task
from zoo.datasets.base import DataBundle
from zoo.errors import ZooError
from zoo.metrics.hessian_memory import lanczos_vectors, trace_vectors, vector_limits
from zoo.spec import HessianSpec, MetricsSpec, ModelJob, ZooSpec

FLOAT_BYTES = 4
CUDA_CONTEXT = 600 * 2**20  # bytes each worker process holds for its CUDA context
TRAIN_ACTIVATION_FACTOR = 2.5  # saved leaf outputs plus their gradients during backward
HESSIAN_GRAPH_FACTOR = 2.32  # a sample's gradient graph, kept for the double backward
HESSIAN_PROBE_FACTOR = 1.01  # the double backward of one (sample, probe) pair
CURVE_PARAMETER_FACTOR = 9  # three control points, their gradients and momentum
EVAL_ACTIVATION_FACTOR = 0.1  # no_grad: only a few layers' outputs are alive at once
EVAL_CHUNK = 1024  # zoo.objective.EVAL_CHUNK
HEADROOM = 1.2  # allocator fragmentation and what the factors miss
FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


@dataclass(frozen=True)
class TaskShape:
    """What a task's memory depends on, counted on one model (values, not bytes)."""

    parameters: int  # trainable values of one model
    activations: int  # leaf-module output values for one sample
    members: int  # models trained at once (1 one by one, else the population)
    batch_size: int
    optimizer_states: int  # 1 for SGD momentum, 2 for Adam(W)
    seeds: int  # models of a cell restored on the device for the pair metrics
    data_values: int  # input and target values of the whole data set moved to the device


def task_bytes(shape: TaskShape, metrics: MetricsSpec) -> int:
    """Predicted peak bytes of one task on its GPU."""
    weights = shape.parameters * FLOAT_BYTES
    training = shape.members * (weights * (2 + shape.optimizer_states) + shape.batch_size
                                * shape.activations * FLOAT_BYTES * TRAIN_ACTIVATION_FACTOR)
    evaluation = EVAL_CHUNK * shape.activations * FLOAT_BYTES * EVAL_ACTIVATION_FACTOR
    phases = [training, evaluation]
    if metrics.hessian.enabled:
        phases.append(hessian_bytes(shape.parameters, shape.activations, metrics.hessian))
    if metrics.curve.enabled and shape.seeds > 1:
        phases.append(weights * CURVE_PARAMETER_FACTOR + metrics.curve.batch_size
                      * shape.activations * FLOAT_BYTES * TRAIN_ACTIVATION_FACTOR)
    resident = CUDA_CONTEXT + shape.data_values * FLOAT_BYTES + shape.seeds * weights
    return int(resident + max(phases))


def hessian_bytes(parameters: int, activations: int, hessian: HessianSpec) -> int:
    """Peak bytes of the Hessian metrics, as zoo.metrics.hessian streams them: the larger of
    the eigenvalue's (one vector over a micro-batch of samples, and its basis) and the trace's
    (a block of probes at once, each over micro_batch_size // probes samples), the basis and
    the block sized by hessian.vector_memory_gb."""
    max_basis, block = vector_limits(parameters, FLOAT_BYTES, hessian.vector_memory_gb * 1e9)
    samples = hessian.batches * hessian.batch_size
    size = hessian.micro_batch_size
    probes = min(block, size)
    ways = ((min(size, samples), 1, lanczos_vectors(hessian.max_iter, max_basis)),
            (min(size // probes, samples), probes, trace_vectors(probes)))
    return int(max((graph * (HESSIAN_GRAPH_FACTOR + probes * HESSIAN_PROBE_FACTOR) * activations
                    + vectors * parameters) * FLOAT_BYTES for graph, probes, vectors in ways))


def gpu_fraction(needed: int, device_bytes: int) -> float:
    """The smallest of FRACTIONS whose share of `device_bytes` holds `needed` with HEADROOM."""
    for fraction in FRACTIONS:
        if fraction * device_bytes >= needed * HEADROOM:
            return fraction
    raise ZooError(f"--gpus-per-task auto: a task needs ~{needed / 2**30:.1f} GiB, more than "
                   f"the GPU's {device_bytes / 2**30:.1f} GiB; lower the batch size, the "
                   f"width, metrics.hessian.micro_batch_size or .vector_memory_gb")


def shape_of(spec: ZooSpec, jobs: Sequence[ModelJob], stacked: bool,
             bundle: DataBundle) -> TaskShape:
    """Count a task's TaskShape on the CPU (one sample through one model)."""
    from zoo.train import model_shape
    from zoo.train import build_model

    counted = model_shape(build_model(spec, jobs[0].cell, bundle, jobs[0].seed), bundle)
    data = sum(t.numel() for t in (*bundle.train, *bundle.test, *bundle.extras.values()))
    return TaskShape(counted.values, counted.activations, len(jobs) if stacked else 1,
                     jobs[0].cell.batch_size, 1 if spec.training.optimizer == "sgd" else 2,
                     len(spec.seeds), data)


def auto_gpus_per_task(spec: ZooSpec, tasks: Sequence[Task], bundle: DataBundle,
                       device_bytes: int) -> float:
    """One fraction for every task (Ray asks it per remote function): the largest needed.
    A task the planner left to the worker stacks as choose_stacking decides on CUDA."""
    from zoo.train import choose_stacking

    fractions = []
    for task in tasks:
        jobs = tuple(job for cell in task.cells for job in cell)
        stacked = task.stacked
        if stacked is None:
            stacked = choose_stacking(spec, jobs, bundle, "cuda")
        needed = task_bytes(shape_of(spec, jobs, stacked, bundle), spec.metrics)
        fractions.append(gpu_fraction(needed, device_bytes))
    return max(fractions)


def device_memory() -> int:
    """Total bytes of this machine's first CUDA device (the cluster's GPUs are taken alike)."""
    import torch

    if not torch.cuda.is_available():
        raise ZooError("--gpus-per-task auto: torch sees no CUDA device here to size tasks "
                       "by; pass a fraction, e.g. --gpus-per-task 0.25")
    return int(torch.cuda.get_device_properties(0).total_memory)
