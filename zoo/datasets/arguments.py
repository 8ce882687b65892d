"""Checking a spec's `data.args` against the arguments each data set accepts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from zoo.errors import SpecError

Check = Callable[[str, Any], Any]  # (field, value) -> normalised value; raises SpecError


@dataclass(frozen=True)
class Param:
    """One accepted argument: its default and the check that normalises a given value."""

    default: Any
    check: Check


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def integer(minimum: int) -> Check:
    """An integer >= minimum (booleans are refused: YAML `yes` must not become 1)."""

    def check(field: str, value: Any) -> int:
        if not _is_int(value) or value < minimum:
            raise SpecError(f"{field}: {value!r} is not allowed; expected an integer >= {minimum}")
        return int(value)

    return check


def optional_integer(minimum: int) -> Check:
    """None (no limit) or an integer >= minimum."""
    inner = integer(minimum)

    def check(field: str, value: Any) -> int | None:
        if value is None:
            return None
        try:
            return inner(field, value)
        except SpecError:
            raise SpecError(
                f"{field}: {value!r} is not allowed; expected null (no limit) or an integer "
                f">= {minimum}"
            ) from None

    return check


def open_fraction(field: str, value: Any) -> float:
    """A number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) < 1.0:
        raise SpecError(f"{field}: {value!r} is not allowed; expected a number in (0, 1)")
    return float(value)


def integer_pair(minimum: int) -> Check:
    """Two integers >= minimum, given as a list or tuple (YAML gives lists)."""

    def check(field: str, value: Any) -> tuple[int, int]:
        ok = (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and len(value) == 2
            and all(_is_int(v) and v >= minimum for v in value)
        )
        if not ok:
            raise SpecError(
                f"{field}: {value!r} is not allowed; expected two integers >= {minimum}, "
                "e.g. [64, 32]"
            )
        return (int(value[0]), int(value[1]))

    return check


def resolve(
    dataset: str, args: Mapping[str, Any] | None, params: Mapping[str, Param]
) -> dict[str, Any]:
    """Check `args` against `params` and fill in defaults.

    Returns:
        every accepted argument by name, normalised (ints, floats, tuples).
    """
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise SpecError(f"data.args: {args!r} is not allowed; expected a mapping of arguments")
    allowed = ", ".join(sorted(params)) or "none"
    for key in sorted(args, key=str):
        if key not in params:
            raise SpecError(
                f"data.args.{key}: unknown argument for {dataset}; allowed: {allowed}"
            )
    return {
        key: param.check(f"data.args.{key}", args[key]) if key in args else param.default
        for key, param in params.items()
    }
