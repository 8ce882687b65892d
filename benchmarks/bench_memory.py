"""Peak memory of a worker: one cell of a spec trained and measured in a fresh process.

    python -m benchmarks.bench_memory [--spec demo]

Each cell runs in its own process (as a Ray worker would) and reports its peak resident set;
the baseline, measured the same way in the same run, is a process that imports torch and loads
the data set but trains nothing, so the difference is what training and metrics add.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.common import machine, print_table, write_results

CHILD = """
import json, resource, sys, torch
torch.set_num_threads(1)
from zoo.specfile import load_spec
from zoo import datasets
from zoo.cell import run_cell
spec = load_spec(sys.argv[1])
bundle = datasets.load(spec.data.name, root=spec.data.root, args=spec.data.args)
index = int(sys.argv[2])
if index >= 0:
    cells = {}
    for job in spec.jobs(bundle.fingerprint()):
        cells.setdefault(job.cell_id, []).append(job)
    jobs = list(cells.values())[index]
    run_cell(spec, jobs, bundle)
    cell = jobs[0].cell
    print(json.dumps({"width": cell.width, "batch_size": cell.batch_size,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
else:
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak(spec: str, index: int) -> dict:
    """Peak RSS (MB) of a fresh process running cell `index` of `spec` (-1: load data only)."""
    done = subprocess.run([sys.executable, "-c", CHILD, spec, str(index)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="demo", help="built-in spec name or YAML file")
    parser.add_argument("--cells", type=int, default=3,
                        help="how many cells to measure (the last ones: the widest models)")
    args = parser.parse_args()
    from zoo.specfile import load_spec

    count = len(load_spec(args.spec).cells())
    baseline = peak(args.spec, -1)["peak_mb"]
    rows = []
    for index in range(max(0, count - args.cells), count):
        row = peak(args.spec, index)
        row.update(baseline_mb=baseline, added_mb=row["peak_mb"] - baseline)
        rows.append(row)
    print_table(rows, ["width", "batch_size", "peak_mb", "baseline_mb", "added_mb"])
    path = write_results("memory", {"machine": machine(), "spec": args.spec, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
