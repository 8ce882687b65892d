"""Commands that rewrite a zoo folder's derived parts without training: `relabel`, `card`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.phases import CKA_METRICS, MC_BOUNDS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `relabel` and `card` commands."""
    for add in (_add_relabel, _add_card):
        add(sub)


def _add_relabel(sub: argparse._SubParsersAction) -> None:
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
    relabel.add_argument("--cka-metric", choices=CKA_METRICS, default=None,
                         help="the CKA that decides IV-A / IV-B (cka_mixup: Yang et al.'s)")
    relabel.add_argument("--mc-bound", choices=MC_BOUNDS, default=None,
                         help="two-sided: phase IV needs |mc| < --mc (Yang et al.); "
                              "lower: only mc >= -mc")
    relabel.add_argument("--dry-run", action="store_true",
                         help="print the table of old and new labels and write nothing")
    relabel.set_defaults(run=cmd_relabel)


def cmd_relabel(args: argparse.Namespace) -> int:
    from generators.relabel import relabel, relabel_table

    overrides = {name: value for name, value in (("high_loss", args.high_loss), ("mc", args.mc),
                                                 ("cka", args.cka), ("cka_metric", args.cka_metric),
                                                 ("mc_bound", args.mc_bound)) if value is not None}
    result = relabel(Path(args.dir), overrides, dry_run=args.dry_run)
    print(relabel_table(result))
    print(f"thresholds: {result.thresholds}; {len(result.moved())} of {len(result.after)} "
          f"cells change phase or confidence ('?': not confident, '-': no label)")
    if not args.dry_run:
        print(f"wrote {len(result.written)} cells shards; the manifest lists them")
    return 0


def _add_card(sub: argparse._SubParsersAction) -> None:
    card = sub.add_parser("card", help="rewrite a zoo folder's README.md dataset card")
    card.add_argument("dir", help="zoo folder")
    card.set_defaults(run=cmd_card)


def cmd_card(args: argparse.Namespace) -> int:
    from zoo.folder.card import write_card
    from zoo.folder.lock import FolderLock

    with FolderLock(Path(args.dir), on_stale=lambda line: print(line, file=sys.stderr)):
        print(f"wrote {write_card(Path(args.dir))}")
    return 0
