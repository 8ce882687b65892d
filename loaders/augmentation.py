"""Train-time augmentation of stored weights: function-preserving permutations and noise."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from zoo.architectures.permutations import permutation_groups, permute
from zoo.layout import Layout


@dataclass(frozen=True)
class Augment:
    """Opt-in augmentation for the train split; every draw comes from a seeded torch.Generator.

    Args:
        permute: reorder hidden units with a random permutation per group (function unchanged).
        additive_noise: std of Gaussian noise added to every float value (after normalisation).
        multiplicative_noise: std s of the factor (1 + N(0, s²)) on every float value.
        seed: base seed; an item's draws depend on (seed, ZooDataset epoch, index) only.
    """

    permute: bool = False
    additive_noise: float = 0.0
    multiplicative_noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("additive_noise", "multiplicative_noise"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"augment.{name}: {value!r} is not allowed; expected a "
                                 f"finite number >= 0")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"augment.seed: {self.seed!r} is not allowed; expected an integer")


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator for one item's draws, the same in every DataLoader worker."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


class Augmenter:
    """Augmentation for one layout: a permutation is one gather of the flat vector."""

    def __init__(self, layout: Layout, augment: Augment) -> None:
        self.layout = layout
        self.augment = augment
        self.groups = permutation_groups(layout.family, layout) if augment.permute else []
        self.positions = {e.name: torch.arange(e.offset, e.offset + e.size).view(e.shape)
                          for e in layout.entries}
        self.floats = torch.cat([torch.full((e.size,), float(e.dtype != "int64"))
                                 for e in layout.entries])

    def permutation_index(self, generator: torch.Generator) -> torch.Tensor:
        """(layout.size,) positions: permuted flat = flat[index] for one random draw."""
        perms = {g.name: torch.randperm(g.size, generator=generator) for g in self.groups}
        permuted = permute(self.positions, self.groups, perms)
        return torch.cat([permuted[e.name].reshape(-1) for e in self.layout.entries])

    def permute(self, flat: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A function-preserving reordering of hidden units (flat itself when off)."""
        return flat[self.permutation_index(generator)] if self.groups else flat

    def noise(self, flat: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Multiplicative then additive Gaussian noise on float values (integers untouched)."""
        if self.augment.multiplicative_noise:
            draw = torch.randn(flat.shape, generator=generator) * self.floats
            flat = flat * (1 + self.augment.multiplicative_noise * draw)
        if self.augment.additive_noise:
            draw = torch.randn(flat.shape, generator=generator) * self.floats
            flat = flat + self.augment.additive_noise * draw
        return flat
