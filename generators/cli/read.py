"""Commands that read a zoo folder and report: `info`, `verify`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from generators.cli.tables import summary_table
from zoo.printable import printable


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `info` and `verify` commands."""
    for add in (_add_info, _add_verify):
        add(sub)


def _add_info(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser("info", help="counts per cell, sizes and phases of a zoo folder")
    info.add_argument("dir", help="zoo folder or URI (s3://bucket/prefix)")
    info.set_defaults(run=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from zoo.folder.location import is_uri
    from zoo.folder.reader import ZooReader

    reader = ZooReader(args.dir)
    spec = reader.record.spec
    shards = reader.manifest.shards
    size = sum(s.bytes for s in shards)
    rows = sum(s.rows for s in reader.manifest.shards_of("models"))
    phases = Counter(reader.table("cells", columns=["phase"]).column("phase").to_pylist())
    where = args.dir if is_uri(args.dir) else Path(args.dir).resolve()
    print(printable(f"zoo {spec['name']} in {where}"))
    print(printable(f"spec hash {reader.record.spec_hash}; {len(shards)} shards, "
                    f"{size / 1e6:.2f} MB"))
    print(f"{len(reader.manifest.cell_ids())} cells, {rows} model rows")
    print(printable("phases: " + ", ".join(f"{p or 'unlabelled'}: {n}" for p, n in sorted(
        phases.items(), key=lambda item: str(item[0])))))
    print(summary_table(args.dir))
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    verify = sub.add_parser(
        "verify", help="check a zoo folder; exit code 0 if all holds, 1 problems, 2 unreadable",
        description="Check the manifest, zoo.json and README.md (sha256, spec hash, configs "
                    "paths), every shard (a regular file inside the folder, sha256, schema, "
                    "rows), every layout against its architecture, counts and ids, and rows: "
                    "weights against layouts, finite flags against values, HDF5 against "
                    "Parquet (a sample of cells; --deep: every row).")
    verify.add_argument("dir", help="zoo folder or URI (s3://bucket/prefix)")
    verify.add_argument("--deep", action="store_true",
                        help="decode every row of every shard (default: a sample of 8 models shards)")
    verify.add_argument("--recompute", type=int, default=0, metavar="N",
                        help="also re-evaluate N random checkpoints and compare their metrics")
    verify.add_argument("--data-root", default=None, metavar="DIR",
                        help="folder of a local data set for --recompute (the root zoo.json "
                             "names is never opened)")
    verify.set_defaults(run=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from analysis.verify import verify

    problems = verify(args.dir, recompute_count=args.recompute, deep=args.deep,
                      data_root=args.data_root)
    for problem in problems:
        print(f"problem: {printable(problem)}", file=sys.stderr)
    if problems:
        print(f"zoo: {len(problems)} problems in {args.dir}", file=sys.stderr)
        return 1
    print(f"{args.dir}: manifest, zoo.json, card, checksums, schemas, layouts, counts, ids and "
          f"{'every row' if args.deep else 'a sample of rows'} hold"
          + (f"; {args.recompute} checkpoints recompute to their metrics" if args.recompute
             else ""))
    return 0
