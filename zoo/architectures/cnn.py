"""Plain convolutional classifiers, 1-D for signals and 2-D for images."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.architectures.base import Family, bool_arg, integer_arg, shape_error
from zoo.datasets.base import DataInfo

LAYERS = {1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d),
          2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)}


def make_cnn(width: int, info: DataInfo, args: dict[str, Any]) -> nn.Module:
    """`depth` x (conv3 -> [BN] -> ReLU -> [max-pool 2]) -> global average pool -> Linear.

    A layer pools only while every spatial side is >= 2, so tiny inputs keep a valid shape.

    Args:
        width: channels of every conv layer.
        info: input_shape (L,) (one channel is added), (C, L) or (C, H, W).
        args: depth, batch_norm.
    """
    shape = info.input_shape
    layers: list[nn.Module] = []
    if len(shape) == 1:
        layers.append(nn.Unflatten(1, (1, shape[0])))
        shape = (1, *shape)
    if len(shape) not in (2, 3):
        raise shape_error("cnn", info, "(L,), (C, L) or (C, H, W)")
    conv, norm, pool, global_pool = LAYERS[len(shape) - 1]
    channels, spatial = shape[0], list(shape[1:])
    for _ in range(args["depth"]):
        # a conv before batch norm needs no bias: the norm's shift replaces it
        layers.append(conv(channels, width, 3, padding=1, bias=not args["batch_norm"]))
        if args["batch_norm"]:
            layers.append(norm(width))
        layers.append(nn.ReLU())
        if min(spatial) >= 2:
            layers.append(pool(2))
            spatial = [side // 2 for side in spatial]
        channels = width
    layers += [global_pool(1), nn.Flatten(), nn.Linear(channels, info.num_outputs)]
    return nn.Sequential(*layers)


FAMILIES = {
    "cnn": Family("cnn", "classification",
                  {"depth": integer_arg(2, 1), "batch_norm": bool_arg(False)}, make_cnn),
}
