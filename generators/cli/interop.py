"""Commands that convert between zoo folders and Ray Tune trial folders: `import-ray-tune`,
`export-ray-tune`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generators.cli.folders import folder_option, new_folders, remove_created


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `import-ray-tune` and `export-ray-tune` commands."""
    for add in (_add_import_ray_tune, _add_export_ray_tune):
        add(sub)


def _add_import_ray_tune(sub: argparse._SubParsersAction) -> None:
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


def cmd_import_ray_tune(args: argparse.Namespace) -> int:
    from analysis.interop import import_ray_tune

    out = folder_option(args.out, "a new zoo folder")
    created, was_empty = new_folders(out), out.is_dir() and not any(out.iterdir())
    try:
        report = import_ray_tune(Path(args.src), out, family=args.family, data=args.data,
                                 data_root=args.data_root, name=args.name)
    except BaseException:
        remove_created(out, created, was_empty)
        raise
    print(f"imported {report.trials} trials into {report.cells} cells of {report.root.resolve()}")
    for path in report.missing[:10]:
        print(f"missing checkpoint: {path}", file=sys.stderr)
    if report.missing:
        print(f"zoo: {len(report.missing)} checkpoints of epochs the spec keeps are missing; "
              f"`zoo verify` will report the row count", file=sys.stderr)
    return 0


def _add_export_ray_tune(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("export-ray-tune", help="write a zoo folder as Ray Tune trial folders",
                         description="One trial folder per model: params.json, result.json "
                                     "(line i = epoch i) and checkpoint_NNNNNN/checkpoints.")
    exp.add_argument("dir", help="zoo folder")
    exp.add_argument("--out", required=True, metavar="DIR",
                     help="new folder to write the trial folders into")
    exp.set_defaults(run=cmd_export_ray_tune)


def cmd_export_ray_tune(args: argparse.Namespace) -> int:
    from analysis.interop import export_ray_tune

    folders = export_ray_tune(Path(args.dir), folder_option(args.out, "a new folder for trials"))
    print(f"wrote {len(folders)} trial folders to {Path(args.out).resolve()}")
    return 0
