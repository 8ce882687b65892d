"""Commands that turn a zoo folder into figures and downstream results: `plot`, `study`,
`benchmark`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `plot`, `study` and `benchmark` commands."""
    for add in (_add_plot, _add_study, _add_benchmark):
        add(sub)


def _add_plot(sub: argparse._SubParsersAction) -> None:
    plot = sub.add_parser("plot", help="write PNG phase diagrams of a zoo folder",
                          description="Heatmaps over (load, temperature) of test accuracy, train "
                                      "loss, log Hessian trace and top eigenvalue, CKA, mc and "
                                      "the phase map, one PNG each plus overview.png.")
    plot.add_argument("dir", help="zoo folder, or URI such as s3://bucket/prefix")
    plot.add_argument("--out", default=None, metavar="DIR",
                      help="folder or URI for the PNGs (default: DIR/plots, on the store for "
                           "a URI)")
    plot.set_defaults(run=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from analysis.plots import plot_zoo

    for path in plot_zoo(args.dir, args.out):
        print(f"wrote {path}")
    return 0


def _densities(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers "
                                         f"in (0, 1], e.g. 1,0.5,0.2,0.1") from None


def _add_study(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser("study", help="run a downstream study; a Parquet table and a PNG",
                           description="averaging: epoch and aligned seed averages; finetune: "
                                       "transfer to a shifted data set; prune: global magnitude "
                                       "pruning. Results per model or cell, plotted per phase.")
    study.add_argument("name", choices=("averaging", "finetune", "prune"), help="the study")
    study.add_argument("dir", help="zoo folder, or URI such as s3://bucket/prefix")
    study.add_argument("--out", default=None, metavar="DIR",
                       help="output folder or URI (default: DIR/studies/NAME, on the store for "
                            "a URI)")
    study.add_argument("--last", type=int, default=5, metavar="K",
                       help="averaging: average each model's last K stored checkpoints")
    study.add_argument("--epochs", type=int, default=2, metavar="K",
                       help="finetune: epochs of fine-tuning on the target data set")
    study.add_argument("--densities", type=_densities, default=[1.0, 0.5, 0.2, 0.1],
                       metavar="LIST", help="prune: comma-separated fractions of weights kept "
                                            "(default 1,0.5,0.2,0.1)")
    study.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    study.set_defaults(run=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from analysis.studies import run_study

    options = {"averaging": {"last": args.last}, "finetune": {"epochs": args.epochs},
               "prune": {"densities": args.densities}}[args.name]
    for path in run_study(args.name, args.dir, args.out,
                          show_progress=not args.no_progress, **options):
        print(f"wrote {path}")
    return 0


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("benchmark", help="run the weight-space benchmark's baselines",
                           description="Predict test accuracy, generalisation gap, phase and "
                                       "the grid's hyperparameters from checkpoints, on splits "
                                       "that hold out whole cells, the largest widths or seeds; "
                                       "writes DIR/benchmark/ (splits.json, results.parquet, "
                                       "results.md, results.png).")
    bench.add_argument("dir", help="zoo folder")
    bench.add_argument("--seed", type=int, default=0, help="seed of splits and baselines")
    bench.set_defaults(run=cmd_benchmark)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from analysis.benchmark import run_benchmark

    for path in run_benchmark(Path(args.dir), seed=args.seed).paths:
        print(f"wrote {path}")
    return 0
