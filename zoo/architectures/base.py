"""What every architecture family declares: its task, its arguments and how to build it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from zoo.datasets.base import DataInfo, Task
from zoo.errors import SpecError


@dataclass(frozen=True)
class Arg:
    """One optional argument of a family: its default, a check, and the allowed values in words."""

    default: Any
    expected: str  # completes "expected ...", e.g. "an integer >= 1"
    allowed: Callable[[Any], bool]


@dataclass(frozen=True)
class Family:
    """An architecture family: the task it serves, its arguments, and its builder.

    Args:
        name: registry name, e.g. "resnet18".
        task: the DataInfo.task it accepts.
        args: argument name -> Arg.
        make: (width, info, args with every default filled in) -> module.
    """

    name: str
    task: Task
    args: Mapping[str, Arg]
    make: Callable[[int, DataInfo, dict[str, Any]], nn.Module]


def integer_arg(default: int, low: int) -> Arg:
    """An integer argument >= `low` (booleans are refused)."""
    return Arg(default, f"an integer >= {low}",
               lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low)


def choice_arg(default: str, choices: tuple[str, ...]) -> Arg:
    """A string argument from a fixed set."""
    return Arg(default, f"one of {', '.join(map(repr, choices))}",
               lambda v: isinstance(v, str) and v in choices)


def bool_arg(default: bool) -> Arg:
    """A true/false argument."""
    return Arg(default, "true or false", lambda v: isinstance(v, bool))


def check_divisible(width: int, heads: int) -> None:
    """Attention splits `width` into `heads` equal parts; refuse widths that do not split."""
    if width % heads:
        raise SpecError(f"architecture.args.heads: {heads} does not divide architecture.width "
                        f"{width}; expected a width that is a multiple of heads")


def shape_error(family: str, info: DataInfo, expected: str) -> SpecError:
    """The error for a data set whose sample shape a family cannot take."""
    return SpecError(f"architecture.family: {family!r} cannot take input_shape "
                     f"{info.input_shape}; expected {expected}")
