"""Permutation symmetries: which (parameter, axis) pairs one permutation of hidden units reorders.

Reordering the hidden units of a layer, together with every tensor that produces or consumes
them, leaves the network's function unchanged. A PermutationGroup lists those tensors: the
producing weight's axis 0 and bias, the per-channel BatchNorm parameters and running statistics
that follow it, and the consuming weight's axis 1. In a ResNet every tensor that reads or writes
one stage's residual stream shares a single permutation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import torch

from zoo.layout import Layout

Shapes = Mapping[str, tuple[int, ...]]
Source = Union[Layout, Mapping[str, torch.Tensor]]

SEQUENTIAL = ("cnn", "mlp", "pinn-mlp")  # nn.Sequential: layers in state_dict order
RESIDUAL = ("resnet18", "resnet50")  # torchvision names: conv1, bn1, layerS.B.*, fc
PER_CHANNEL = ("weight", "bias", "running_mean", "running_var")  # BatchNorm, axis 0


@dataclass(frozen=True)
class PermutationGroup:
    """One permutation of `size` units and every (state_dict name, axis) it reorders."""

    name: str
    size: int
    members: tuple[tuple[str, int], ...]


@dataclass
class _Open:
    """A group being collected: its name and members so far."""

    name: str
    members: list[tuple[str, int]] = field(default_factory=list)

    def close(self, shapes: Shapes) -> PermutationGroup:
        sizes = {shapes[name][axis] for name, axis in self.members}
        if len(sizes) != 1:
            raise ValueError(f"permutation group {self.name!r}: members {self.members} "
                             f"disagree on the number of units {sorted(sizes)}")
        return PermutationGroup(self.name, sizes.pop(), tuple(self.members))


def shapes_of(source: Source) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a Layout's entries or of a state_dict, in order."""
    if isinstance(source, Layout):
        return {e.name: e.shape for e in source.entries}
    return {name: tuple(tensor.shape) for name, tensor in source.items()}


def permutation_groups(family: str, source: Source) -> list[PermutationGroup]:
    """The permutation groups of `family` for the parameters in `source` (layout or state_dict).

    Raises:
        ValueError: the family has no permutation spec, or the names do not follow it.
    """
    shapes = shapes_of(source)
    if family in SEQUENTIAL:
        return _sequential(shapes)
    if family in RESIDUAL:
        return _residual(shapes)
    raise ValueError(f"family {family!r} has no permutation spec; expected one of "
                     f"{', '.join(SEQUENTIAL + RESIDUAL)}")


def module_groups(model: torch.nn.Module) -> list[PermutationGroup]:
    """permutation_groups for a built model: ResNets by class, nn.Sequential otherwise."""
    from zoo.architectures.resnet import ResNet

    family = "resnet18" if isinstance(model, ResNet) else "mlp"
    if family == "mlp" and not isinstance(model, torch.nn.Sequential):
        raise ValueError(f"{type(model).__name__} has no permutation spec; expected an "
                         f"nn.Sequential MLP/CNN or a ResNet")
    return permutation_groups(family, model.state_dict())


def permute(state_dict: Mapping[str, torch.Tensor], groups: Sequence[PermutationGroup],
            perms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A new state_dict where unit i of each group is unit perms[group.name][i] of the input."""
    out = dict(state_dict)
    for group in groups:
        perm = perms[group.name]
        for name, axis in group.members:
            out[name] = out[name].index_select(axis, perm)
    return out


def _modules(shapes: Shapes) -> dict[str, dict[str, tuple[int, ...]]]:
    """Module prefix -> {entry suffix: shape}, in state_dict order."""
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in shapes.items():
        prefix, _, suffix = name.rpartition(".")
        modules.setdefault(prefix, {})[suffix] = shape
    return modules


def _per_channel(prefix: str, entries: Mapping[str, tuple[int, ...]]) -> list[tuple[str, int]]:
    """A norm module's per-channel tensors (num_batches_tracked is a scalar and stays)."""
    return [(f"{prefix}.{s}", 0) for s in PER_CHANNEL if s in entries and len(entries[s]) == 1]


def _sequential(shapes: Shapes) -> list[PermutationGroup]:
    """Each layer's outputs, its following norm, and the next layer's inputs; not the last."""
    groups: list[PermutationGroup] = []
    current: _Open | None = None
    for prefix, entries in _modules(shapes).items():
        if len(entries.get("weight", ())) >= 2:
            if current is not None:
                current.members.append((f"{prefix}.weight", 1))
                groups.append(current.close(shapes))
            current = _Open(prefix, [(f"{prefix}.weight", 0)])
            if "bias" in entries:
                current.members.append((f"{prefix}.bias", 0))
        elif current is not None:
            current.members += _per_channel(prefix, entries)
    return groups


def _blocks(shapes: Shapes) -> list[str]:
    """Residual block prefixes ('layer1.0', ...) in order."""
    blocks: list[str] = []
    for name in shapes:
        parts = name.split(".")
        if parts[0].startswith("layer") and f"{parts[0]}.{parts[1]}" not in blocks:
            blocks.append(f"{parts[0]}.{parts[1]}")
    return blocks


def _norm(shapes: Shapes, prefix: str) -> list[tuple[str, int]]:
    return [(f"{prefix}.{s}", 0) for s in PER_CHANNEL if f"{prefix}.{s}" in shapes]


def _residual(shapes: Shapes) -> list[PermutationGroup]:
    """Stem and residual streams (one per stage), and the hidden channels inside each block."""
    if "conv1.weight" not in shapes or "fc.weight" not in shapes:
        raise ValueError("a ResNet state_dict needs conv1.weight and fc.weight (torchvision names)")
    groups: list[PermutationGroup] = []
    stream = _Open("stream.stem", [("conv1.weight", 0), *_norm(shapes, "bn1")])
    for block in _blocks(shapes):
        convs = sorted(int(n.split(".")[2][4:]) for n in shapes
                       if n.startswith(f"{block}.conv") and n.endswith(".weight"))
        stream.members.append((f"{block}.conv1.weight", 1))
        if f"{block}.downsample.0.weight" in shapes:
            stream.members.append((f"{block}.downsample.0.weight", 1))
            groups.append(stream.close(shapes))
            stream = _Open(f"stream.{block.split('.')[0]}",
                           [(f"{block}.downsample.0.weight", 0),
                            *_norm(shapes, f"{block}.downsample.1")])
        for i in convs[:-1]:
            groups.append(_Open(f"{block}.conv{i}", [
                (f"{block}.conv{i}.weight", 0), *_norm(shapes, f"{block}.bn{i}"),
                (f"{block}.conv{i + 1}.weight", 1)]).close(shapes))
        stream.members += [(f"{block}.conv{convs[-1]}.weight", 0),
                           *_norm(shapes, f"{block}.bn{convs[-1]}")]
    stream.members.append(("fc.weight", 1))
    groups.append(stream.close(shapes))
    return groups
