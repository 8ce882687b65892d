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

from generators.cli import generate, interop, read, rewrite, store, study
from generators.stopping import exit_on_sigterm, restore_sigterm, terminated
from zoo.errors import ZooError
from zoo.printable import printable

GROUPS = (generate, read, rewrite, study, interop, store)  # the order of `zoo --help`


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
    """Entry point of the `zoo` console script; errors are one line on stderr, exit code 2;
    Ctrl-C exits 130 and SIGTERM 143, each in one line, once the workers are stopped and the
    folder's lock released (both unwind with the exception)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    previous = exit_on_sigterm()
    try:
        return run(args)
    except ZooError as error:
        if args.debug:
            traceback.print_exc()
        print(f"zoo: error: {printable(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # the system refused a file: an unwritable --out, a full disk
        if args.debug:
            traceback.print_exc()
        where = f"{error.filename}: " if error.filename is not None else ""
        print(f"zoo: error: {printable(where)}{printable(error.strerror or error)}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (generators.stopping)
        if terminated():
            return _stopped("terminated (SIGTERM)", 143)
        return _stopped("interrupted", 130)
    finally:
        restore_sigterm(previous)


def _stopped(how: str, code: int) -> int:
    """Stop this process's local Ray runtime (its workers) and say what was kept."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    print(f"zoo: {how}; the workers were stopped and the lock released; every cell "
          f"committed before stays (rerun the same command to go on)", file=sys.stderr)
    return code
