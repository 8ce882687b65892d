"""How large a zoo spec may be: named limits, checked before anything is allocated.

A spec is text that strangers write; every number in it that sets a size (epochs, widths,
depth, seeds, grid values, rows, parameters, document bytes and nesting) has a ceiling here.
The ceilings sit far above the published zoos (resnet18-cifar10: 7 widths x 7 batch sizes
x 3 seeds, widths <= 384, 200 epochs) and far below what exhausts a machine.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from zoo.errors import SpecError

MAX_SPEC_BYTES = 1_000_000  # a spec file; the largest built-in is ~1.5 kB
MAX_NESTING = 32  # levels of mappings and lists in a spec document
MAX_NODES = 100_000  # values in a spec document, YAML aliases expanded (alias bombs)
MAX_TEXT = 10_000  # characters of one string (a description, a data.root)
MAX_NAME = 100  # characters of a zoo name (it becomes a folder name)
MAX_PATH = 4_096  # characters of a path such as data.root (Linux's PATH_MAX)
MAX_PATH_PART = 255  # bytes of one name in such a path (Linux's NAME_MAX)

MAX_EPOCHS = 100_000
MAX_WIDTH = 65_536  # architecture.width, grid width or model_dim values
MAX_SEEDS = 1_000  # seeds of a zoo, and the largest seed value is below 2**32
MAX_SEED_VALUE = 2**32 - 1
MAX_AXIS_VALUES = 1_000  # values of one grid axis
MAX_CELLS = 10_000  # load values x temperature values
MAX_MODELS = 100_000  # cells x seeds
MAX_MODEL_ROWS = 10_000_000  # cells x seeds x kept epochs: rows of the models table
MAX_PARAMETERS = 1_000_000_000  # stored values of one checkpoint (4 GB in float32)
MAX_CURVE_POINTS = 1_001  # points where a Bezier curve is evaluated (np.linspace)
MAX_ITERATIONS = 100_000  # Lanczos steps (top eigenvalue) or Hutchinson probes (trace)
MAX_INTEGER = 100_000_000  # any other integer setting (batch sizes, steps, probes)

# Architecture arguments that set a size; each is also held to MAX_INTEGER.
ARCHITECTURE_ARG_LIMITS = {"depth": 256, "heads": 1_024, "patch_size": 4_096, "mlp_ratio": 64}
# Data-set arguments that set how much data is made in memory.
DATA_ARG_LIMITS = {"collocation": 10_000_000, "initial": 10_000_000, "boundary": 10_000_000,
                   "grid": 8_192, "context": 65_536, "max_chars": 1_000_000_000}


def short_repr(value: Any, length: int = 60) -> str:
    """repr(value), cut to `length` characters so that one error stays one short line."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than Python prints
        text = f"<an integer of {value.bit_length()} bits>"
    return text if len(text) <= length else f"{text[:length - 3]}..."


def check_folder_path(path: str, value: Any) -> str:
    """A path the system can open: a string of at most MAX_PATH characters, no NUL, each name
    at most MAX_PATH_PART bytes (else the first stat fails with a traceback, not a line)."""
    plain = isinstance(value, str) and len(value) <= MAX_PATH and "\0" not in value
    if not plain or max(len(p.encode("utf-8", "surrogateescape")) for p in value.split("/")) \
            > MAX_PATH_PART:
        raise refuse(path, value, f"a folder path of at most {MAX_PATH} characters, each "
                                  f"name at most {MAX_PATH_PART} bytes")
    return value


def refuse(path: str, value: Any, allowed: str) -> SpecError:
    """The one error shape of spec checks: `field: value is not allowed; expected ...`."""
    return SpecError(f"{path or 'spec'}: {short_repr(value)} is not allowed; expected {allowed}")


def _children(value: Any, path: str) -> Iterator[tuple[Any, str]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield child, f"{path}.{key}" if path else str(key)
    elif isinstance(value, (list, tuple)):
        for i, child in enumerate(value):
            yield child, f"{path}[{i}]"


def check_document(raw: Any, where: str = "spec") -> None:
    """Refuse documents nested deeper than MAX_NESTING or holding more than MAX_NODES values.

    Walks without recursion and stops at the first excess, so an alias bomb (a few lines that
    expand to billions of values) costs at most MAX_NODES steps. Non-finite floats anywhere
    (`.inf`, `.nan`) are refused too: no size, rate or threshold may be infinite.
    """
    stack, nodes = [(raw, "", 0)], 1
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_NESTING:
            raise SpecError(f"{path or where}: nested more than {MAX_NESTING} levels deep; "
                            f"expected at most {MAX_NESTING}")
        if isinstance(value, float) and not math.isfinite(value):
            raise refuse(path, value, "a finite number")
        children = [(child, child_path, depth + 1) for child, child_path in
                    _children(value, path)]
        nodes += len(children)  # counted when found, so the stack never holds more
        if nodes > MAX_NODES:
            raise SpecError(f"{where}: more than {MAX_NODES} values (YAML aliases expanded); "
                            f"expected a smaller document")
        stack.extend(children)


def check_arguments(args: Any, path: str, limits: dict[str, int]) -> None:
    """Hold every integer in a family's or data set's `args` to its limit (or MAX_INTEGER)."""
    if not isinstance(args, dict):
        raise refuse(path, args, "a mapping of arguments")
    for key, value in args.items():
        high = limits.get(key, MAX_INTEGER)
        for item, where in ([(value, f"{path}.{key}")] if not isinstance(value, (list, tuple))
                            else [(v, f"{path}.{key}[{i}]") for i, v in enumerate(value)]):
            if isinstance(item, int) and not isinstance(item, bool) and item > high:
                raise refuse(where, item, f"at most {high}")


def check_totals(cells: int, seeds: int, kept_epochs: int) -> None:
    """Refuse grids whose cells, models or model rows exceed their limits (counted, not built)."""
    if cells > MAX_CELLS:
        raise SpecError(f"grid: {cells} cells (load values x temperature values) is not "
                        f"allowed; expected at most {MAX_CELLS}")
    if cells * seeds > MAX_MODELS:
        raise SpecError(f"seeds: {cells} cells x {seeds} seeds = {cells * seeds} models is not "
                        f"allowed; expected at most {MAX_MODELS} models")
    rows = cells * seeds * kept_epochs
    if rows > MAX_MODEL_ROWS:
        raise SpecError(f"checkpoints: {cells * seeds} models x {kept_epochs} kept epochs = "
                        f"{rows} model rows is not allowed; expected at most {MAX_MODEL_ROWS}")


def check_parameters(counts: dict[int, int], width_field: dict[int, str]) -> None:
    """Refuse widths whose checkpoints exceed MAX_PARAMETERS stored values.

    Args:
        counts: width -> stored values per checkpoint (counted on the meta device).
        width_field: width -> the spec field that sets it, for the message.
    """
    for width, count in sorted(counts.items()):
        if count > MAX_PARAMETERS:
            raise SpecError(f"{width_field.get(width, 'architecture.width')}: width {width} "
                            f"gives {count:,} values per checkpoint; expected at most "
                            f"{MAX_PARAMETERS:,} (a smaller width or depth)")
