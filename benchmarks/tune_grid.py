"""The Ray Tune way from the command line: one trial per model of a spec's grid (width x batch
size x seed), the same recipe, an evaluation and a checkpoint every epoch, two trials at once.

    python -m benchmarks.tune_grid SPEC --out DIR
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="spec YAML with a width x batch_size grid")
    parser.add_argument("--out", required=True, type=Path, help="folder for Tune's trials")
    options = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from benchmarks.bench_generation import run_tune
    from generators.executor import ensure_ray
    from zoo import datasets
    from zoo.specfile import load_spec

    spec = load_spec(options.spec)
    ensure_ray(num_cpus=2)  # a runtime of its own, as `zoo generate` starts
    trials = run_tune(spec, datasets.load(spec.data.name, args=spec.data.args), options.out)
    print(f"{trials} trials")


if __name__ == "__main__":
    main()
