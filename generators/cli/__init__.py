"""The `zoo` command line: a thin layer over specs, generation and the readers.

Each command group is one module here with a `register(subparsers)` that adds its commands,
each command's arguments beside its handler; a new command goes into the group it belongs to
(or a new module listed in `GROUPS`).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, Sequence

from generators.cli import generate, interop, read, rewrite, study
from zoo.errors import ZooError
from zoo.printable import printable

GROUPS = (generate, read, rewrite, study, interop)  # the order of `zoo --help`


def build_parser() -> argparse.ArgumentParser:
    """The `zoo` parser with every group's commands."""
    parser = argparse.ArgumentParser(
        prog="zoo", description="Generate, inspect and study phase model zoos.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
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
        print(f"zoo: error: {printable(error)}", file=sys.stderr)
        return 2
