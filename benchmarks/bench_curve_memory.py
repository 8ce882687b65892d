"""Peak memory of mode-connectivity curve fits and their evaluation, in parameter-sized vectors.

    python -m benchmarks.bench_curve_memory [--hidden 4096] [--steps 3]

A wide MLP (many parameters, 16 samples: steps are cheap, vectors are not), each way in a fresh
process: one `fit_bezier` round; a second round from the first's control point with the first
curve kept (as `zoo.measure` fits rounds); `fit_bezier_stacked` of the three pairs of three
models (a cell's pairs when its architecture is stackable). Reported: the peak resident memory
the fit, then the 5-point evaluation of its curves, add above what the process held before the
fit (models and data), in MB and in vectors of one model's parameters; beside it the vectors
`generators/packing.py` budgets for a curve (CURVE_PARAMETER_FACTOR).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.bench_hessian_memory import CLASSES, INPUTS, SAMPLES, parameters
from benchmarks.common import machine, print_table, write_results
from generators.packing import CURVE_PARAMETER_FACTOR

WAYS = ("one round", "second round", "stacked, 3 pairs")

CHILD = """
import json, sys, torch
torch.set_num_threads(1)
from zoo.metrics import connectivity
hidden, way, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
loss = torch.nn.functional.cross_entropy
data = torch.Generator().manual_seed(1)
batches = [(torch.randn({samples}, {inputs}, generator=data),
            torch.randint(0, {classes}, ({samples},), generator=data))]


def mlp(width, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear({inputs}, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, {classes}))


def fit(models, control=None, seed=0):
    return connectivity.fit_bezier(models[0], models[1], loss, batches, steps=steps,
                                   generator=torch.Generator().manual_seed(seed), control=control)


def curves(models):
    if way == "one round":
        return [fit(models)]
    if way == "second round":
        first = fit(models)
        return [first, fit(models, first.control, seed=1)]
    pairs = [(models[0], models[1]), (models[0], models[2]), (models[1], models[2])]
    generators = [torch.Generator().manual_seed(seed) for seed in range(3)]
    return connectivity.fit_bezier_stacked(pairs, loss, batches, generators, steps=steps)


def evaluate(model):
    with torch.no_grad():
        return {{"loss": float(loss(model(batches[0][0]), batches[0][1]))}}


def peak_mb(reset=False):
    if reset:  # VmHWM starts again from the current resident memory
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


curves([mlp(8, seed) for seed in range(3)])  # warm-up: torch's first code paths are not counted
models = [mlp(hidden, seed) for seed in range(3)]
before = peak_mb(reset=True)
fitted = curves(models)
fit_mb = peak_mb() - before
peak_mb(reset=True)
for curve in fitted:
    connectivity.evaluate_curve(curve, [0.0, 0.25, 0.5, 0.75, 1.0], evaluate)
print(json.dumps({{"fit_mb": fit_mb, "eval_mb": peak_mb() - before}}))
""".format(inputs=INPUTS, classes=CLASSES, samples=SAMPLES)


def run(hidden: int, way: str, steps: int) -> dict:
    """One way in a fresh process: the memory its fit and its evaluation added (MB)."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(hidden), way, str(steps)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=4096, help="MLP width (4096: 17M values)")
    parser.add_argument("--steps", type=int, default=3, help="SGD steps of each fit")
    args = parser.parse_args()
    count = parameters(args.hidden)
    vector_mb = count * 4 / 2**20
    rows = []
    for way in WAYS:
        added = run(args.hidden, way, args.steps)
        rows.append({"way": way, "fit_mb": added["fit_mb"],
                     "fit_vectors": added["fit_mb"] / vector_mb, "eval_mb": added["eval_mb"],
                     "eval_vectors": added["eval_mb"] / vector_mb,
                     "budgeted_vectors": CURVE_PARAMETER_FACTOR})
    print(f"MLP {INPUTS}-{args.hidden}-{args.hidden}-{CLASSES}: {count:,} parameters, "
          f"{vector_mb:.0f} MB a vector; {args.steps} steps a fit")
    print_table(rows, ["way", "fit_mb", "fit_vectors", "eval_mb", "eval_vectors",
                       "budgeted_vectors"])
    path = write_results("curve_memory", {"machine": machine(), "hidden": args.hidden,
                                          "parameters": count, "steps": args.steps,
                                          "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
