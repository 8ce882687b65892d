"""The tanh MLP that physics-informed networks use to represent u(x, t)."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.architectures.base import Family, integer_arg, shape_error
from zoo.datasets.base import DataInfo


def make_pinn_mlp(width: int, info: DataInfo, args: dict[str, Any]) -> nn.Module:
    """(B, 2) points (x, t) -> `depth` x (Linear(width), tanh) -> (B, num_outputs) values.

    Xavier-normal weights and zero biases, the standard PINN init; tanh rather than ReLU because
    the PDE residual differentiates the network and needs smooth derivatives.

    Args:
        width: units per hidden layer.
        info: input_shape (d,) coordinates per point; num_outputs 1 for a scalar field.
        args: depth.
    """
    if len(info.input_shape) != 1:
        raise shape_error("pinn-mlp", info, "(d,) coordinates per point, e.g. (2,) for (x, t)")
    layers: list[nn.Module] = []
    fan_in = info.input_shape[0]
    for _ in range(args["depth"]):
        layers += [nn.Linear(fan_in, width), nn.Tanh()]
        fan_in = width
    layers.append(nn.Linear(fan_in, info.num_outputs))
    model = nn.Sequential(*layers)
    for module in model:
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            nn.init.zeros_(module.bias)
    return model


FAMILIES = {"pinn-mlp": Family("pinn-mlp", "pinn", {"depth": integer_arg(4, 1)}, make_pinn_mlp)}
