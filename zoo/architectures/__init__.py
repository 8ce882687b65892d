"""The architecture registry: which families exist, their arguments, and building a model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from zoo.architectures import cnn, gpt, mlp, pinn, resnet, vit
from zoo.architectures.base import Family
from zoo.datasets.base import DataInfo
from zoo.errors import SpecError

REGISTRY: dict[str, Family] = {
    **mlp.FAMILIES, **cnn.FAMILIES, **resnet.FAMILIES, **vit.FAMILIES, **gpt.FAMILIES,
    **pinn.FAMILIES,
}


def families() -> list[str]:
    """Names of every architecture family, sorted."""
    return sorted(REGISTRY)


def _family(name: Any) -> Family:
    if not isinstance(name, str) or name not in REGISTRY:
        raise SpecError(f"architecture.family: {name!r} is not allowed; expected one of "
                        f"{', '.join(families())}")
    return REGISTRY[name]


def _resolve(family: Family, args: Mapping[str, Any]) -> dict[str, Any]:
    """Check `args` against the family's arguments and fill in the defaults."""
    if not isinstance(args, Mapping):
        raise SpecError(f"architecture.args: {args!r} is not allowed; expected a mapping")
    for key, value in args.items():
        if key not in family.args:
            allowed = ", ".join(sorted(family.args)) or "no arguments"
            raise SpecError(f"architecture.args.{key}: unknown argument for family "
                            f"{family.name!r}; expected {allowed}")
        if not family.args[key].allowed(value):
            raise SpecError(f"architecture.args.{key}: {value!r} is not allowed; expected "
                            f"{family.args[key].expected}")
    return {key: args.get(key, arg.default) for key, arg in family.args.items()}


def validate_args(family: str, args: Mapping[str, Any]) -> None:
    """Raise SpecError unless `family` exists and `args` are its arguments with allowed values."""
    _resolve(_family(family), args)


def build(family: str, *, width: int, info: DataInfo,
          args: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a freshly initialised model of `family`, drawing from torch's global RNG.

    The caller seeds (torch.random.fork_rng + manual_seed); the same seed gives the same model.

    Args:
        family: one of families().
        width: the load axis: hidden units, channels, or model dimension (>= 1).
        info: the data set's task, sample shape and number of outputs.
        args: the family's optional arguments; missing ones take their defaults.

    Raises:
        SpecError: unknown family or argument, a value out of range, or data the family
            cannot take (wrong task or sample shape, a width that the heads do not divide).
    """
    spec = _family(family)
    resolved = _resolve(spec, args or {})
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise SpecError(f"architecture.width: {width!r} is not allowed; expected an integer >= 1")
    if info.task != spec.task:
        raise SpecError(f"architecture.family: {family!r} is not allowed for a {info.task!r} "
                        f"data set; expected a {spec.task!r} data set")
    return spec.make(width, info, resolved)
