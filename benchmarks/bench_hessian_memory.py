"""Peak memory of the Hessian metrics with their parameter-sized vectors bounded vs unbounded.

    python -m benchmarks.bench_hessian_memory [--hidden 4096] [--budget-vectors 10]

A wide MLP (many parameters, few samples: products are cheap, vectors are not), each metric run
in a fresh process: the top eigenvalue (tol 0, so every run makes max_iter products and an
unbounded basis grows to max_iter vectors) and one trace block (10 probes unbounded). Bounded
runs get `metrics.hessian.vector_memory_gb` worth `--budget-vectors` parameter-sized vectors.
Reported: the peak resident memory each run adds above what its process held before the call
(model and data), in MB and in vectors, what `zoo.metrics.hessian_memory` predicts, and the
ratio unbounded / bounded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.common import machine, print_table, write_results
from zoo.metrics.hessian_memory import lanczos_vectors, trace_vectors, vector_limits

INPUTS, CLASSES, SAMPLES = 64, 10, 16

CHILD = """
import json, resource, sys, time, torch
torch.set_num_threads(1)
from zoo.metrics import hessian
hidden, metric, max_iter = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
budget = None if sys.argv[4] == "none" else float(sys.argv[4])
loss = torch.nn.functional.cross_entropy
data = torch.Generator().manual_seed(1)
batches = [(torch.randn({samples}, {inputs}, generator=data),
            torch.randint(0, {classes}, ({samples},), generator=data))]


def mlp(width):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear({inputs}, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, {classes}))


def measured(model, max_basis, probe_block):
    generator = torch.Generator().manual_seed(0)
    if metric == "eigenvalue":
        return hessian.top_eigenvalue(model, loss, batches, max_iter=max_iter, tol=0.0,
                                      generator=generator, max_basis=max_basis)
    return hessian.trace(model, loss, batches, max_iter=10, tol=0.0, generator=generator,
                         probe_block=probe_block)[0]  # one block of probes: 10 unbounded


measured(mlp(8), 3, 2)  # warm-up: the first use of torch's code paths is not counted
model = mlp(hidden)
limits = hessian.vector_limits(model, budget)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
value = measured(model, *limits)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"added_mb": (after - before) / 1024, "seconds": seconds, "value": value}}))
""".format(inputs=INPUTS, classes=CLASSES, samples=SAMPLES)


def parameters(hidden: int) -> int:
    """Trainable values of the benchmark's MLP."""
    return (INPUTS + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * CLASSES


def run(hidden: int, metric: str, max_iter: int, budget: float | None) -> dict:
    """One metric in a fresh process: the memory it added (MB), its seconds and value."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(hidden), metric, str(max_iter),
                           "none" if budget is None else repr(budget)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=4096, help="MLP width (4096: 17M values)")
    parser.add_argument("--budget-vectors", type=int, default=10,
                        help="the bounded runs' budget, in parameter-sized float32 vectors")
    parser.add_argument("--max-iter", type=int, default=24, help="Lanczos products")
    args = parser.parse_args()
    count = parameters(args.hidden)
    vector_mb = count * 4 / 2**20
    budget = args.budget_vectors * count * 4
    max_basis, probe_block = vector_limits(count, 4, budget)
    predicted = {"eigenvalue": (lanczos_vectors(args.max_iter, None),
                                lanczos_vectors(args.max_iter, max_basis)),
                 "trace": (trace_vectors(10), trace_vectors(probe_block))}
    rows = []
    for metric in ("eigenvalue", "trace"):
        free, bound = (run(args.hidden, metric, args.max_iter, b) for b in (None, budget))
        rows.append({"metric": metric, "unbounded_mb": free["added_mb"],
                     "bounded_mb": bound["added_mb"],
                     "ratio": free["added_mb"] / bound["added_mb"],
                     "unbounded_vectors": free["added_mb"] / vector_mb,
                     "bounded_vectors": bound["added_mb"] / vector_mb,
                     "predicted": "{} / {}".format(*predicted[metric]),
                     "unbounded_s": free["seconds"], "bounded_s": bound["seconds"],
                     "rel_diff": abs(bound["value"] - free["value"]) / abs(free["value"])})
    print(f"MLP {INPUTS}-{args.hidden}-{args.hidden}-{CLASSES}: {count:,} parameters, "
          f"{vector_mb:.0f} MB a vector; budget {args.budget_vectors} vectors: "
          f"max_basis {max_basis}, probe_block {probe_block}")
    print_table(rows, ["metric", "unbounded_mb", "bounded_mb", "ratio", "unbounded_vectors",
                       "bounded_vectors", "predicted", "unbounded_s", "bounded_s", "rel_diff"])
    path = write_results("hessian_memory", {"machine": machine(), "hidden": args.hidden,
                                            "parameters": count, "max_basis": max_basis,
                                            "probe_block": probe_block, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
