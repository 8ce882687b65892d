"""End to end from the command line, in the same run: `zoo generate` of issue 13's 32-model grid
(mnist1d MLPs, widths 16-128 x batch 16-128 x 2 seeds, 10 epochs, a checkpoint every epoch,
metrics off) against one Ray Tune trial per model (benchmarks.tune_grid), the start-up of each
(a one-model, one-epoch run: nearly all fixed cost), and the 32 models' cost after start-up
(the grid's seconds less the start-up's), which is what each way pays a model on larger grids.

    python -m benchmarks.bench_cli [--quick] [--skip-tune] [--code DIR]

--code runs the same commands on another checkout (e.g. an older commit exported with
`git archive`), to measure a change before and after. Prints a table and writes
benchmarks/results/cli.json (cli-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import machine, print_table, write_results

METRICS_OFF = {"epochs": ["last"], "hessian": {"enabled": False},
               "similarity": {"enabled": False}, "curve": {"enabled": False}, "spectra": False}


def grid_spec(folder: Path, name: str, widths: list[int], batches: list[int], seeds: int,
              epochs: int) -> Path:
    """Write the grid as a spec YAML, the file both commands read."""
    body = {"name": name, "data": {"name": "mnist1d"},
            "architecture": {"family": "mlp", "args": {"depth": 2}},
            "training": {"epochs": epochs}, "seeds": seeds, "checkpoints": {"every": 1},
            "grid": {"load": {"axis": "width", "values": widths},
                     "temperature": {"axis": "batch_size", "values": batches}},
            "metrics": METRICS_OFF}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def run(command: list[str], code: Path) -> float:
    """Wall seconds of `command` run in `code` (its packages first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_DATASETS_OFFLINE": "1"}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return seconds


def generate(spec: Path, out: Path, code: Path) -> float:
    return run([sys.executable, "-m", "generators.cli", "generate", str(spec), "--out", str(out),
                "--formats", "parquet", "--no-progress"], code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 10")
    parser.add_argument("--skip-tune", action="store_true", help="leave out the Ray Tune way")
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1],
                        help="checkout whose `zoo` runs (default: this one)")
    options = parser.parse_args()
    epochs = 2 if options.quick else 10
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        grid = grid_spec(folder, "grid", [16, 32, 64, 128], [16, 32, 64, 128], 2, epochs)
        one = grid_spec(folder, "one", [16], [128], 1, 1)
        rows.append({"way": "zoo generate, 1 model, 1 epoch (start-up)", "models": 1,
                     "seconds": generate(one, folder / "one", options.code)})
        rows.append({"way": "zoo generate", "models": 32,
                     "seconds": generate(grid, folder / "zoo", options.code)})
        if not options.skip_tune:
            here = Path(__file__).resolve().parents[1]
            for spec, way, models in ((one, "ray tune, 1 model, 1 epoch (start-up)", 1),
                                      (grid, "ray tune, a trial per model", 32)):
                rows.append({"way": way, "models": models, "seconds": run(
                    [sys.executable, "-m", "benchmarks.tune_grid", str(spec), "--out",
                     str(folder / f"tune-{models}")], here)})
    seconds = {r["way"]: r["seconds"] for r in rows}
    tune = seconds.get("ray tune, a trial per model")
    for row in rows:
        row["models_per_hour"] = 3600 * row["models"] / row["seconds"]
        if tune and row["models"] == 32:
            row["vs_tune"] = tune / row["seconds"]
    if tune:  # what a model costs once each way's runtime is up, start-up taken out
        ours = seconds["zoo generate"] - seconds["zoo generate, 1 model, 1 epoch (start-up)"]
        theirs = tune - seconds["ray tune, 1 model, 1 epoch (start-up)"]
        rows.append({"way": "after start-up (32 models less a 1-model run)", "models": 32,
                     "seconds": ours, "models_per_hour": 3600 * 32 / ours,
                     "vs_tune": theirs / ours})
    print_table(rows, ["way", "models", "seconds", "models_per_hour", "vs_tune"])
    path = write_results("cli-quick" if options.quick else "cli",
                         {"machine": machine(), "code": str(options.code), "epochs": epochs,
                          "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
