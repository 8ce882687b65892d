"""How many parameter-sized vectors the Hessian metrics keep, within a memory budget.

Besides one micro-batch's gradient graph (bounded by `metrics.hessian.micro_batch_size`), the
Hessian metrics hold vectors the size of all trainable parameters: Lanczos keeps its basis (one
vector per product unless restarted) and each product's buffers; Hutchinson multiplies a block
of probes at once, each with its product's buffers. On large models these dominate: ResNet-18
at width 256 has 179M parameters, 0.71 GB a float32 vector, so a 100-vector basis alone would
be 71 GB. `vector_limits` picks the basis size and probe block that fit a budget; a model whose
vectors fit keeps the unbounded basis and the 10-probe block, so its results do not change.
No torch here: `generators.packing` sizes GPU tasks with the same counts.
"""

from __future__ import annotations

# Vector counts measured by benchmarks/bench_hessian_memory.py (a 17M-parameter MLP, peak
# resident memory in vectors): Lanczos 29.1 with 24 basis vectors, 12.1 with 6 and 10.1 with 4;
# a trace block 51 with 10 probes, 13.2 with 2 and 7.1 with 1.
PROBE_BLOCK = 10  # Hutchinson probes multiplied at once when the budget allows
LANCZOS_WORK_VECTORS = 6  # besides the basis: a product's output, autograd's result and its
#   concatenation, the gradient, a restart's scratch
TRACE_PROBE_VECTORS = 5  # per probe: the probe, the product's output, autograd's result, its
#   concatenation, the batched backward's sums
TRACE_WORK_VECTORS = 3  # the gradient kept with its graph, the draws of a probe
MIN_BASIS = 2  # a thick restart keeps at least one Ritz vector and the residual


def vector_limits(parameters: int, itemsize: int,
                  budget_bytes: float | None) -> tuple[int | None, int]:
    """The Lanczos basis size and trace probe block whose vectors fit `budget_bytes`.

    Args:
        parameters: trainable values of the model (the length of one vector).
        itemsize: bytes of one value (4 for float32).
        budget_bytes: bytes the parameter-sized vectors may take; None: no bound.
    Returns:
        (max_basis: None when unbounded, else >= MIN_BASIS; probe_block: 1..PROBE_BLOCK). A
        budget below the minimum (MIN_BASIS basis vectors, one probe) still gets the minimum.
    """
    if budget_bytes is None:
        return None, PROBE_BLOCK
    vectors = int(budget_bytes // (parameters * itemsize))
    max_basis = max(MIN_BASIS, vectors - LANCZOS_WORK_VECTORS)
    probes = (vectors - TRACE_WORK_VECTORS) // TRACE_PROBE_VECTORS
    return max_basis, min(PROBE_BLOCK, max(1, probes))


def lanczos_vectors(max_iter: int, max_basis: int | None) -> int:
    """Most parameter-sized vectors of a top-eigenvalue run: its basis (one vector a product up
    to max_basis) and a product's buffers."""
    basis = max_iter if max_basis is None else min(max_basis, max_iter)
    return basis + LANCZOS_WORK_VECTORS


def trace_vectors(probe_block: int) -> int:
    """Most parameter-sized vectors of a trace run that multiplies probe_block probes at once."""
    return probe_block * TRACE_PROBE_VECTORS + TRACE_WORK_VECTORS
