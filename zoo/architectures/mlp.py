"""Fully connected classifiers on flattened inputs."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from zoo.architectures.base import Family, choice_arg, integer_arg
from zoo.datasets.base import DataInfo

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def make_mlp(width: int, info: DataInfo, args: dict[str, Any]) -> nn.Module:
    """Flatten -> `depth` x (Linear(width), activation) -> Linear(num_outputs); PyTorch init.

    Args:
        width: units per hidden layer.
        info: any input shape; it is flattened to prod(input_shape) features.
        args: depth, activation.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(info.input_shape)
    for _ in range(args["depth"]):
        layers += [nn.Linear(fan_in, width), ACTIVATIONS[args["activation"]]()]
        fan_in = width
    layers.append(nn.Linear(fan_in, info.num_outputs))
    return nn.Sequential(*layers)


FAMILIES = {
    "mlp": Family("mlp", "classification",
                  {"depth": integer_arg(2, 1),
                   "activation": choice_arg("relu", tuple(ACTIVATIONS))},
                  make_mlp),
}
