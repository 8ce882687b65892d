"""Width-scaled ResNet-18 and ResNet-50 with the CIFAR stem, as in the phase-transition zoos."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.architectures.base import Family, shape_error
from zoo.datasets.base import DataInfo


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 3x3 conv with padding 1."""
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 1x1 conv."""
    return nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)


def downsample(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """None when the block keeps its shape, else the 1x1 conv + BN projection shortcut."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (same parameter names): two 3x3 convs, the first one strided."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_channels, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample = downsample(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5, same names): 1x1, strided 3x3, 1x1 to 4x planes."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1, self.bn1 = conv1x1(in_channels, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = conv1x1(planes, out_channels), nn.BatchNorm2d(out_channels)
        self.downsample = downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """CIFAR-stem ResNet whose four stages have w, 2w, 4w, 8w planes (w = 64 is the standard).

    Parameter names follow torchvision (conv1, bn1, layer1..layer4, fc), so checkpoints of
    torchvision-based zoos load as they are. Conv weights get Kaiming-uniform init with mode
    fan_in and the ReLU gain sqrt(2) (what nn.init.kaiming_uniform_ does with its defaults, as
    the PTMZ zoos call it); BN weight 1, bias 0; the Linear head keeps PyTorch's default init.

    Args:
        block: BasicBlock or Bottleneck.
        blocks: blocks per stage, e.g. [2, 2, 2, 2].
        width: w, the planes of the first stage.
        in_channels: image channels C of (C, H, W) inputs.
        num_classes: outputs of the Linear head.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], blocks: list[int], width: int,
                 in_channels: int, num_classes: int) -> None:
        super().__init__()
        # CIFAR stem: 3x3 stride 1 and no max-pool, so 32x32 (or 8x8) inputs keep their detail
        self.conv1, self.bn1 = conv3x3(in_channels, width), nn.BatchNorm2d(width)
        channels = width
        for index, count in enumerate(blocks):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            stage = []
            for position in range(count):
                stage.append(block(channels, planes, stride if position == 0 else 1))
                channels = planes * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet_maker(name: str, block: type[BasicBlock | Bottleneck],
                 blocks: list[int]) -> Callable[[int, DataInfo, dict[str, Any]], nn.Module]:
    """A Family.make for one depth of ResNet."""

    def make(width: int, info: DataInfo, args: dict[str, Any]) -> nn.Module:
        if len(info.input_shape) != 3:
            raise shape_error(name, info, "(C, H, W) images")
        return ResNet(block, blocks, width, info.input_shape[0], info.num_outputs)

    return make


FAMILIES = {
    "resnet18": Family("resnet18", "classification", {},
                       resnet_maker("resnet18", BasicBlock, [2, 2, 2, 2])),
    "resnet50": Family("resnet50", "classification", {},
                       resnet_maker("resnet50", Bottleneck, [3, 4, 6, 3])),
}
