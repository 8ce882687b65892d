"""Cost of each landscape metric relative to one training epoch, and Hessian vs PyHessian 0.1.

    python -m benchmarks.bench_metrics [--widths 32 128] [--memory-widths 16]

PyHessian (an optional `bench` extra) runs on the same model and the same 10 x 64 batches.
Its trace stops as soon as the running mean changes little (or turns negative), so the two
traces are compared at an equal number of Rademacher probes (equal standard error); the top
eigenvalues are compared by time to tolerance and by error against a tight Lanczos reference.

Memory: a ResNet-18 on digits, the same 10 x 64 probe samples, each Hessian metric run in a
fresh process, once with the whole probe set differentiated at once (the graph kept between
products) and once in micro-batches (`metrics.hessian.micro_batch_size`); the peak resident
memory each adds above what the process held before it, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import torch

from benchmarks.common import machine, print_table, threads, timed, write_results
from zoo import datasets
from zoo.measure import curve_columns, cka_columns, probe_batches
from zoo.metrics import hessian, spectra
from zoo.objective import Objective, output_loss
from zoo.specfile import parse_spec
from zoo.train import build_model, train_model

SPEC = {"name": "bench-metrics", "architecture": {"family": "mlp", "args": {"depth": 2}},
        "data": {"name": "mnist1d"}, "training": {"epochs": 5, "batch_size": 64},
        "grid": {"load": {"axis": "width", "values": [32]},
                 "temperature": {"axis": "batch_size", "values": [64]}},
        "seeds": [0, 1], "metrics": {"curve": {"steps": 200}}}


def _trained(width: int):
    spec = parse_spec({**SPEC, "grid": {**SPEC["grid"],
                                        "load": {"axis": "width", "values": [width]}}})
    bundle = datasets.load("mnist1d")
    models, epoch_seconds = [], 0.0
    for job in spec.jobs(bundle.fingerprint()):
        trained = train_model(spec, job, bundle)
        epoch_seconds = trained.seconds / spec.training.epochs  # includes evaluation per epoch
        model = build_model(spec, job.cell, bundle, job.seed)
        model.load_state_dict(trained.checkpoints[-1].state_dict)
        models.append(model.eval())
    return spec, bundle, models, epoch_seconds


def _pyhessian(model, batches, probes: int):
    from pyhessian import hessian as pyhessian_module

    engine = pyhessian_module(model, torch.nn.CrossEntropyLoss(), dataloader=batches, cuda=False)
    (top,), eig_time = timed(lambda: engine.eigenvalues(maxIter=100, tol=1e-3)[0])
    (tight,), tight_time = timed(lambda: engine.eigenvalues(maxIter=1000, tol=1e-6)[0])
    samples, trace_time = timed(lambda: engine.trace(maxIter=probes, tol=0.0))
    return top, eig_time.wall, tight, tight_time.wall, samples, trace_time.wall


def measure(width: int) -> dict:
    spec, bundle, (a, b), epoch_seconds = _trained(width)
    objective = Objective(bundle)
    batches = probe_batches(bundle.train, 10, 64)
    reference = hessian.top_eigenvalue(a, output_loss, batches, max_iter=300, tol=1e-10)
    ours_top, ours_eig = timed(lambda: hessian.top_eigenvalue(
        a, output_loss, batches, generator=torch.Generator().manual_seed(0)))
    (ours_trace, ours_err), first = timed(lambda: hessian.trace(
        a, output_loss, batches, generator=torch.Generator().manual_seed(0)))
    probes = 100
    (_, _), ours_fixed = timed(lambda: hessian.trace(
        a, output_loss, batches, max_iter=probes, tol=0.0,
        generator=torch.Generator().manual_seed(0)))
    row = {"width": width, "epoch_s": epoch_seconds,
           "eig_s": ours_eig.wall, "eig_rel_err": abs(ours_top - reference) / abs(reference),
           "trace_s": first.wall, "trace": ours_trace, "trace_stderr": ours_err,
           "trace100_s": ours_fixed.wall}
    _, cka_time = timed(lambda: cka_columns(a, b, objective, spec.metrics))
    _, curve_time = timed(lambda: curve_columns(a, b, objective, spec.metrics, seed=0))
    _, alpha_time = timed(lambda: spectra.layer_alphas(a))
    row.update(cka_s=cka_time.wall, curve200_s=curve_time.wall, alpha_s=alpha_time.wall)
    try:
        top, eig_s, tight, tight_s, samples, trace_s = _pyhessian(a, batches, probes)
        row.update(pyhessian_eig_s=eig_s, pyhessian_eig_rel_err=abs(top - reference) /
                   abs(reference), pyhessian_eig_tight_s=tight_s,
                   pyhessian_eig_tight_rel_err=abs(tight - reference) / abs(reference),
                   pyhessian_trace100_s=trace_s, pyhessian_probes=len(samples),
                   speedup_eig=eig_s / ours_eig.wall, speedup_trace=trace_s / ours_fixed.wall)
        # equal accuracy: PyHessian's eigenvalue at tol 1e-6 is as accurate as ours at 1e-3
        row["speedup_eig_plus_trace"] = (tight_s + trace_s) / (ours_eig.wall + ours_fixed.wall)
    except ImportError:
        row["pyhessian"] = "not installed (pip install -e '.[bench]')"
    for key in ("eig_s", "trace_s", "trace100_s", "cka_s", "curve200_s", "alpha_s"):
        row[f"{key[:-2]}_per_epoch"] = row[key] / epoch_seconds
    return row


MEMORY_CHILD = """
import json, resource, sys, time, torch
torch.set_num_threads(1)
from zoo import architectures, datasets
from zoo.measure import probe_batches
from zoo.metrics import hessian
from zoo.objective import output_loss
width, metric, setting = int(sys.argv[1]), sys.argv[2], sys.argv[3]
micro = None if setting == "all" else int(setting)
bundle = datasets.load("digits")
torch.manual_seed(0)
model = architectures.build("resnet18", width=width, info=bundle.info, args={})
batches = probe_batches(bundle.train, 10, 64)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
generator = torch.Generator().manual_seed(0)
start = time.perf_counter()
if metric == "eigenvalue":  # every product costs the same memory: three show the peak
    value = hessian.top_eigenvalue(model, output_loss, batches, max_iter=3, tol=0.0,
                                   micro_batch_size=micro, generator=generator)
else:  # one block of 10 probes
    value, _ = hessian.trace(model, output_loss, batches, max_iter=10, tol=0.0,
                             micro_batch_size=micro, generator=generator)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"added_mb": (after - before) / 1024, "seconds": seconds, "value": value}))
"""


def hessian_memory(width: int, micro: int) -> list[dict]:
    """Peak memory each Hessian metric adds, whole probe set vs micro-batches of `micro`."""
    rows = []
    for metric in ("eigenvalue", "trace"):
        runs = {}
        for setting in ("all", str(micro)):
            done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(width), metric,
                                   setting], capture_output=True, text=True, check=True)
            runs[setting] = json.loads(done.stdout.strip().splitlines()[-1])
        whole, streamed = runs["all"], runs[str(micro)]
        rows.append({"width": width, "metric": metric, "micro_batch": micro,
                     "whole_mb": whole["added_mb"], "micro_mb": streamed["added_mb"],
                     "memory_ratio": whole["added_mb"] / streamed["added_mb"],
                     "whole_s": whole["seconds"], "micro_s": streamed["seconds"],
                     "rel_diff": abs(streamed["value"] - whole["value"]) / abs(whole["value"])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128],
                        help="MLP widths to measure")
    parser.add_argument("--memory-widths", type=int, nargs="*", default=[16],
                        help="ResNet-18 widths whose Hessian memory is measured (none: skip)")
    parser.add_argument("--micro-batch", type=int, default=128,
                        help="metrics.hessian.micro_batch_size of the streamed runs")
    args = parser.parse_args()
    memory = [row for width in args.memory_widths
              for row in hessian_memory(width, args.micro_batch)]
    if memory:
        print_table(memory, ["width", "metric", "micro_batch", "whole_mb", "micro_mb",
                             "memory_ratio", "whole_s", "micro_s", "rel_diff"])
        print()
    with threads(1):
        rows = [measure(width) for width in args.widths]
    print_table(rows, ["width", "epoch_s", "eig_s", "eig_rel_err", "trace100_s",
                       "pyhessian_eig_s", "pyhessian_eig_rel_err", "pyhessian_eig_tight_s",
                       "pyhessian_eig_tight_rel_err", "pyhessian_trace100_s", "speedup_trace",
                       "speedup_eig_plus_trace"])
    print()
    print_table(rows, ["width", "eig_per_epoch", "trace_per_epoch", "cka_per_epoch",
                       "curve200_per_epoch", "alpha_per_epoch"])
    path = write_results("metrics", {"machine": machine(), "rows": rows, "memory": memory})
    print(f"\nwrote {path}")
    assert all(math.isfinite(r["eig_s"]) for r in rows)


if __name__ == "__main__":
    main()
