"""The `zoo` command line: a thin layer over specs, generation and the readers."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from zoo.errors import ZooError


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_table(root: Path) -> str:
    """One line per cell: axes, models, mean test accuracy and train loss, phase ('?': not
    confident, '-': no label)."""
    from generators.relabel import phase_text
    from zoo.folder.reader import ZooReader

    reader = ZooReader(root)
    cells = reader.table("cells").to_pylist()
    if not cells:
        return "(no cells committed yet)"
    load, temperature = cells[0]["load_axis"], cells[0]["temperature_axis"]
    header = (load, temperature, "models", "test_acc", "test_err", "train_loss", "mc_train_err",
              "cka", "phase")
    lines = [header]
    for row in sorted(cells, key=lambda r: (r["load_value"], r["temperature_value"])):
        lines.append((_fmt(row["load_value"]), _fmt(row["temperature_value"]),
                      _fmt(row["num_models"]), _fmt(row["test_accuracy_mean"]),
                      _fmt(row["test_error_mean"]), _fmt(row["train_loss_mean"]),
                      _fmt(row["mc_train_error_mean"]), _fmt(row["cka_mean"]),
                      phase_text(row)))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    table = "\n".join("  ".join(str(v).rjust(w) for v, w in zip(line, widths)) for line in lines)
    marks = {line[-1][-1] for line in lines[1:]}
    legend = [text for mark, text in (("?", PHASE_UNSURE), ("-", PHASE_NONE)) if mark in marks]
    return "\n".join([table, *legend])


PHASE_UNSURE = ("?: label not confident (a curve fit did not converge, a deciding mean lies "
                "within one standard deviation of its threshold, or fewer than 2 seed pairs)")
PHASE_NONE = "-: no label (a metric the label needs is off or failed)"


def cmd_specs(args: argparse.Namespace) -> int:
    from zoo.specfile import builtin_specs

    for name, description in builtin_specs().items():
        print(f"{name:24s} {description.splitlines()[0] if description else ''}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from generators.generate import generate
    from zoo.specfile import load_spec

    if args.out is not None:
        _folder_option(args.out, "a zoo folder (new, or one to complete)")
    spec = load_spec(args.spec, data_root=args.data_root)
    out = Path(args.out or f"zoo-{spec.name}")
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    if "parquet" not in formats:
        raise ZooError(f"--formats: {args.formats!r} must include parquet (the tables)")
    result = generate(spec, out, address=args.address, workers=args.workers, formats=formats,
                      gpus_per_task=args.gpus_per_task, dry_run=args.dry_run,
                      progress=not args.no_progress, prune=args.prune,
                      **({} if args.inline_bytes is None else
                         {"inline_bytes": args.inline_bytes}))
    if args.dry_run:
        return 0
    if result.committed or result.plan.done:
        print(summary_table(out))
    print(f"zoo written to {out.resolve()} ({result.committed} cells trained this run "
          f"on {len(result.nodes)} Ray nodes)")
    for failure in result.failures:
        print(f"failed: cell {failure.cell_id} ({len(failure.model_ids)} models): "
              f"{failure.error}; details in {out / 'failures' / failure.cell_id}.json",
              file=sys.stderr)
    if result.failures:
        print(f"zoo: {len(result.failures)} cells failed; rerun the same command to retry them",
              file=sys.stderr)
        return 1
    return 0


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


def cmd_info(args: argparse.Namespace) -> int:
    from zoo.folder.reader import ZooReader

    reader = ZooReader(args.dir)
    spec = reader.record.spec
    shards = reader.manifest.shards
    size = sum(s.bytes for s in shards)
    rows = sum(s.rows for s in reader.manifest.shards_of("models"))
    phases = Counter(reader.table("cells", columns=["phase"]).column("phase").to_pylist())
    print(f"zoo {spec['name']} in {Path(args.dir).resolve()}")
    print(f"spec hash {reader.record.spec_hash}; {len(shards)} shards, {size / 1e6:.2f} MB")
    print(f"{len(reader.manifest.cell_ids())} cells, {rows} model rows")
    print("phases: " + ", ".join(f"{p or 'unlabelled'}: {n}" for p, n in sorted(
        phases.items(), key=lambda item: str(item[0]))))
    print(summary_table(Path(args.dir)))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from analysis.verify import verify

    problems = verify(Path(args.dir), recompute_count=args.recompute, deep=args.deep,
                      data_root=args.data_root)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"zoo: {len(problems)} problems in {args.dir}", file=sys.stderr)
        return 1
    print(f"{args.dir}: manifest, zoo.json, card, checksums, schemas, layouts, counts, ids and "
          f"{'every row' if args.deep else 'a sample of rows'} hold"
          + (f"; {args.recompute} checkpoints recompute to their metrics" if args.recompute
             else ""))
    return 0


def cmd_relabel(args: argparse.Namespace) -> int:
    from generators.relabel import relabel, relabel_table

    overrides = {name: value for name, value in (("high_loss", args.high_loss), ("mc", args.mc),
                                                 ("cka", args.cka)) if value is not None}
    result = relabel(Path(args.dir), overrides, dry_run=args.dry_run)
    print(relabel_table(result))
    print(f"thresholds: {result.thresholds}; {len(result.moved())} of {len(result.after)} "
          f"cells change phase or confidence ('?': not confident, '-': no label)")
    if not args.dry_run:
        print(f"wrote {len(result.written)} cells shards; the manifest lists them")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from zoo.folder.card import write_card

    print(f"wrote {write_card(Path(args.dir))}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from analysis.plots import plot_zoo

    for path in plot_zoo(Path(args.dir), args.out):
        print(f"wrote {path}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from analysis.studies import run_study

    options = {"averaging": {"last": args.last}, "finetune": {"epochs": args.epochs},
               "prune": {"densities": args.densities}}[args.name]
    for path in run_study(args.name, Path(args.dir), args.out,
                          show_progress=not args.no_progress, **options):
        print(f"wrote {path}")
    return 0


def cmd_import_ray_tune(args: argparse.Namespace) -> int:
    from analysis.interop import import_ray_tune

    out = _folder_option(args.out, "a new zoo folder")
    created, was_empty = _new_folders(out), out.is_dir() and not any(out.iterdir())
    try:
        report = import_ray_tune(Path(args.src), out, family=args.family, data=args.data,
                                 data_root=args.data_root, name=args.name)
    except BaseException:
        _remove_created(out, created, was_empty)
        raise
    print(f"imported {report.trials} trials into {report.cells} cells of {report.root.resolve()}")
    for path in report.missing[:10]:
        print(f"missing checkpoint: {path}", file=sys.stderr)
    if report.missing:
        print(f"zoo: {len(report.missing)} checkpoints of epochs the spec keeps are missing; "
              f"`zoo verify` will report the row count", file=sys.stderr)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from analysis.benchmark import run_benchmark

    for path in run_benchmark(Path(args.dir), seed=args.seed).paths:
        print(f"wrote {path}")
    return 0


def _folder_option(value: str, expected: str) -> Path:
    """An --out folder; one that names an existing file is refused before any work."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ZooError(f"--out: {value} is a file, not a folder; expected {expected}")
    return path


def _new_folders(out: Path) -> list[Path]:
    """`out` and those of its parents that do not exist yet (a refused import removes them)."""
    missing = []
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def _remove_created(out: Path, created: list[Path], was_empty: bool) -> None:
    """Remove what a failed command wrote: `out` if it was new (then its new parents), or
    everything in it if it was an empty folder before."""
    import shutil

    if was_empty:
        for child in list(out.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)  # cleanup must not hide the error
            else:
                child.unlink(missing_ok=True)
    if not created:
        return
    shutil.rmtree(out, ignore_errors=True)
    for folder in created[1:]:
        try:
            folder.rmdir()
        except OSError:
            break


def cmd_export_ray_tune(args: argparse.Namespace) -> int:
    from analysis.interop import export_ray_tune

    folders = export_ray_tune(Path(args.dir), _folder_option(args.out, "a new folder for trials"))
    print(f"wrote {len(folders)} trial folders to {Path(args.out).resolve()}")
    return 0


def _densities(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers "
                                         f"in (0, 1], e.g. 1,0.5,0.2,0.1") from None


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


def _add_study_commands(sub: argparse._SubParsersAction) -> None:
    """The `plot` and `study` commands."""
    plot = sub.add_parser("plot", help="write PNG phase diagrams of a zoo folder",
                          description="Heatmaps over (load, temperature) of test accuracy, train "
                                      "loss, log Hessian trace and top eigenvalue, CKA, mc and "
                                      "the phase map, one PNG each plus overview.png.")
    plot.add_argument("dir", help="zoo folder")
    plot.add_argument("--out", default=None, metavar="DIR",
                      help="folder for the PNGs (default: DIR/plots)")
    plot.set_defaults(run=cmd_plot)

    study = sub.add_parser("study", help="run a downstream study; a Parquet table and a PNG",
                           description="averaging: epoch and aligned seed averages; finetune: "
                                       "transfer to a shifted data set; prune: global magnitude "
                                       "pruning. Results per model or cell, plotted per phase.")
    study.add_argument("name", choices=("averaging", "finetune", "prune"), help="the study")
    study.add_argument("dir", help="zoo folder")
    study.add_argument("--out", default=None, metavar="DIR",
                       help="output folder (default: DIR/studies/NAME)")
    study.add_argument("--last", type=int, default=5, metavar="K",
                       help="averaging: average each model's last K stored checkpoints")
    study.add_argument("--epochs", type=int, default=2, metavar="K",
                       help="finetune: epochs of fine-tuning on the target data set")
    study.add_argument("--densities", type=_densities, default=[1.0, 0.5, 0.2, 0.1],
                       metavar="LIST", help="prune: comma-separated fractions of weights kept "
                                            "(default 1,0.5,0.2,0.1)")
    study.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    study.set_defaults(run=cmd_study)


def _add_interop_commands(sub: argparse._SubParsersAction) -> None:
    """The `import-ray-tune` and `export-ray-tune` commands."""
    imp = sub.add_parser("import-ray-tune", help="convert Ray Tune trial folders to a zoo folder",
                         description="Read params.json, result.json and checkpoint_NNNNNN/"
                                     "checkpoints (weights_only) of every trial under SRC, as "
                                     "the published phase-transition zoos ship them.")
    imp.add_argument("src", help="folder holding the trial folders (searched recursively)")
    imp.add_argument("--out", required=True, metavar="DIR", help="new zoo folder to write")
    imp.add_argument("--family", default=None,
                     help="architecture family, e.g. resnet18 (default: from model::type)")
    imp.add_argument("--data", default=None,
                     help="data set name, e.g. cifar10 (default: from dataset::name)")
    imp.add_argument("--data-root", default=None, metavar="DIR",
                     help="folder of a local data set, recorded in the spec for loaders")
    imp.add_argument("--name", default=None, help="zoo name (default: the SRC folder's name)")
    imp.set_defaults(run=cmd_import_ray_tune)

    exp = sub.add_parser("export-ray-tune", help="write a zoo folder as Ray Tune trial folders",
                         description="One trial folder per model: params.json, result.json "
                                     "(line i = epoch i) and checkpoint_NNNNNN/checkpoints.")
    exp.add_argument("dir", help="zoo folder")
    exp.add_argument("--out", required=True, metavar="SRC", help="new folder for the trials")
    exp.set_defaults(run=cmd_export_ray_tune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description="Generate, inspect and study phase model zoos.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    specs = sub.add_parser("specs", help="list the built-in zoo specs")
    specs.set_defaults(run=cmd_specs)

    gen = sub.add_parser("generate", help="train a zoo (or the missing part of one)",
                         description="Train every model of a spec on Ray and write a zoo folder;"
                                     " rerunning on the same folder trains only what is missing.")
    gen.add_argument("spec", help="built-in spec name (see `zoo specs`) or a YAML file")
    gen.add_argument("--out", help="zoo folder to write (default: zoo-<spec name>)")
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
    gen.add_argument("--dry-run", action="store_true",
                     help="print the plan (cells, models, rows, bytes) and stop")
    gen.add_argument("--prune", action="store_true",
                     help="let a spec with fewer seeds or grid values than the zoo in --out "
                          "delete the models it leaves out (refused without this flag)")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(run=cmd_generate)

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

    info = sub.add_parser("info", help="counts per cell, sizes and phases of a zoo folder")
    info.add_argument("dir", help="zoo folder")
    info.set_defaults(run=cmd_info)

    verify = sub.add_parser(
        "verify", help="check a zoo folder; exit code 0 if all holds, 1 problems, 2 unreadable",
        description="Check the manifest, zoo.json and README.md (sha256, spec hash, configs "
                    "paths), every shard (a regular file inside the folder, sha256, schema, "
                    "rows), every layout against its architecture, counts and ids, and rows: "
                    "weights against layouts, finite flags against values, HDF5 against "
                    "Parquet (a sample of cells; --deep: every row).")
    verify.add_argument("dir", help="zoo folder")
    verify.add_argument("--deep", action="store_true",
                        help="decode every row of every shard (default: a sample of 8 cells)")
    verify.add_argument("--recompute", type=int, default=0, metavar="N",
                        help="also re-evaluate N random checkpoints and compare their metrics")
    verify.add_argument("--data-root", default=None, metavar="DIR",
                        help="folder of a local data set for --recompute (the root zoo.json "
                             "names is never opened)")
    verify.set_defaults(run=cmd_verify)

    relabel = sub.add_parser("relabel", help="recompute cell phases with other thresholds",
                             description="Relabel every cell from its stored means (no "
                                         "training): defaults of the task scaled by ln C, then "
                                         "the spec's phases, then these options. New cells "
                                         "shards are committed through the manifest.")
    relabel.add_argument("dir", help="zoo folder")
    relabel.add_argument("--high-loss", type=float, default=None, metavar="NATS",
                         help="train loss above this is high (PINN: relative L2 error)")
    relabel.add_argument("--mc", type=float, default=None, metavar="POINTS",
                         help="|mc_train_error| below this is well connected")
    relabel.add_argument("--cka", type=float, default=None, help="CKA at or above this is high")
    relabel.add_argument("--dry-run", action="store_true",
                         help="print the table of old and new labels and write nothing")
    relabel.set_defaults(run=cmd_relabel)

    card = sub.add_parser("card", help="rewrite a zoo folder's README.md dataset card")
    card.add_argument("dir", help="zoo folder")
    card.set_defaults(run=cmd_card)
    _add_study_commands(sub)
    _add_interop_commands(sub)
    bench = sub.add_parser("benchmark", help="run the weight-space benchmark's baselines",
                           description="Predict test accuracy, generalisation gap, phase and "
                                       "the grid's hyperparameters from checkpoints, on splits "
                                       "that hold out whole cells, the largest widths or seeds; "
                                       "writes DIR/benchmark/ (splits.json, results.parquet, "
                                       "results.md, results.png).")
    bench.add_argument("dir", help="zoo folder")
    bench.add_argument("--seed", type=int, default=0, help="seed of splits and baselines")
    bench.set_defaults(run=cmd_benchmark)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zoo` console script; errors are one line on stderr, exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ZooError as error:
        if args.debug:
            traceback.print_exc()
        print(f"zoo: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
