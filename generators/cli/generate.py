"""Commands that make zoos: `specs`, `generate`, `price`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generators.cli.folders import folder_option
from generators.cli.tables import summary_table
from zoo.errors import ZooError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `specs`, `generate` and `price` commands."""
    for add in (_add_specs, _add_generate, _add_price):
        add(sub)


def _add_specs(sub: argparse._SubParsersAction) -> None:
    specs = sub.add_parser("specs", help="list the built-in zoo specs")
    specs.set_defaults(run=cmd_specs)


def cmd_specs(args: argparse.Namespace) -> int:
    from zoo.specfile import builtin_specs

    for name, description in builtin_specs().items():
        print(f"{name:24s} {description.splitlines()[0] if description else ''}")
    return 0


def _gpus(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a fraction >= 0 (e.g. 0.25) "
                                         f"nor auto")
    return value


def _add_generate(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="train a zoo (or the missing part of one)",
                         description="Train every model of a spec on Ray and write a zoo folder;"
                                     " rerunning on the same folder trains only what is missing.")
    gen.add_argument("spec", help="built-in spec name (see `zoo specs`) or a YAML file")
    gen.add_argument("--out", help="zoo folder, or URI such as s3://bucket/prefix, to write "
                                    "(default: zoo-<spec name>)")
    gen.add_argument("--data-root", default=None, metavar="DIR",
                     help="folder of a local data set (CIFAR, SVHN, Tiny-ImageNet, text); "
                          "replaces the spec's data.root")
    gen.add_argument("--address", default=None,
                     help="Ray cluster address to join (e.g. 'auto'); default: a local runtime")
    gen.add_argument("--workers", type=int, default=None,
                     help="at most this many cells train at once (default: all CPUs)")
    gen.add_argument("--gpus-per-task", type=_gpus, default=0.0, metavar="FRACTION|auto",
                     help="GPU fraction each task asks Ray for (e.g. 0.25), or auto: sized "
                          "from a memory estimate of the largest task")
    gen.add_argument("--formats", default="parquet,hdf5",
                     help="comma-separated shard formats: parquet (always) and hdf5")
    gen.add_argument("--inline-bytes", type=int, default=None, metavar="BYTES",
                     help="checkpoints larger than this go to per-model HDF5 files "
                          "(hdf5/models/) instead of the Parquet weights column "
                          "(default: 16 MiB)")
    gen.add_argument("--shard-bytes", type=int, default=None, metavar="BYTES",
                     help="bound of each models file (Parquet shard, HDF5 file); a cell's rows "
                          "span several shards when they hold more (default: 256 MiB)")
    gen.add_argument("--dry-run", action="store_true",
                     help="print the plan (cells, models, rows, bytes) and stop")
    gen.add_argument("--prune", action="store_true",
                     help="let a spec with fewer seeds or grid values than the zoo in --out "
                          "delete the models it leaves out (refused without this flag)")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(run=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from generators.generate import generate
    from zoo.folder.location import is_uri
    from zoo.folder.names import FAILURES
    from zoo.specfile import load_spec

    remote = args.out is not None and is_uri(args.out)
    if args.out is not None and not remote:
        folder_option(args.out, "a zoo folder (new, or one to complete)")
    spec = load_spec(args.spec, data_root=args.data_root)
    out = args.out.rstrip("/") if remote else Path(args.out or f"zoo-{spec.name}")
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    if "parquet" not in formats:
        raise ZooError(f"--formats: {args.formats!r} must include parquet (the tables)")
    result = generate(spec, out, address=args.address, workers=args.workers, formats=formats,
                      gpus_per_task=args.gpus_per_task, dry_run=args.dry_run,
                      progress=not args.no_progress, prune=args.prune,
                      **({} if args.inline_bytes is None else
                         {"inline_bytes": args.inline_bytes}),
                      **({} if args.shard_bytes is None else
                         {"shard_bytes": args.shard_bytes}))
    if args.dry_run:
        return 0
    if result.committed or result.plan.done:
        print(summary_table(out))
    print(f"zoo written to {out if remote else out.resolve()} ({result.committed} cells "
          f"trained this run on {len(result.nodes)} Ray nodes)")
    for failure in result.failures:
        print(f"failed: cell {failure.cell_id} ({len(failure.model_ids)} models): "
              f"{failure.error}; details in {out}/{FAILURES}/{failure.cell_id}.json",
              file=sys.stderr)
    if result.failures:
        print(f"zoo: {len(result.failures)} cells failed; rerun the same command to retry them",
              file=sys.stderr)
        return 1
    return 0


def _add_price(sub: argparse._SubParsersAction) -> None:
    price = sub.add_parser("price", help="predict a zoo's device-hours from timed steps",
                           description="Time real training steps, an evaluation and a checkpoint "
                                       "write for every (width, batch size) of a spec on "
                                       "synthetic data of its shape, and print the whole zoo's "
                                       "predicted hours ours beside one eager model per task.")
    price.add_argument("spec", help="built-in spec name (see `zoo specs`) or a YAML file")
    price.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="where to time (default cpu, one torch thread as a Ray worker)")
    price.add_argument("--steps", type=int, default=None, metavar="N",
                       help="timed steps per shape (default 20 on cpu, 300 on cuda)")
    price.add_argument("--workers", type=int, default=1, metavar="N",
                       help="workers the planner splits stacked groups for (default 1)")
    price.add_argument("--json", default=None, metavar="FILE",
                       help="also write the numbers to this JSON file")
    price.add_argument("--no-progress", action="store_true", help="hide the per-shape lines")
    price.set_defaults(run=cmd_price)


def cmd_price(args: argparse.Namespace) -> int:
    import json

    from generators.price import price, report
    from zoo.specfile import load_spec

    spec = load_spec(args.spec)
    result = price(spec, args.device, args.steps, args.workers,
                   None if args.no_progress else sys.stderr)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    return 0
