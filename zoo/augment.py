"""Seeded training-time augmentation of image batches (random crop, flip, rotation).

Draws come from a CPU generator, per batch in a fixed order (crop offsets, flips, rotation
angles), and are turned into small tensors on the host (the rotation's affine matrices
included), so the same seed gives the same bits on every device. A trainer on an accelerator
draws a whole epoch at once (`epoch_draws`: one copy to the device per epoch, no host round trip
per step) and applies each batch's share with `apply`; `augment` draws and applies one batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

CROP_PADDING = 4  # pixels of zero padding before a random crop, as torchvision RandomCrop(pad 4)
ROTATION_DEGREES = 20.0
KINDS = ("none", "flip", "crop", "crop-flip", "crop-rotate", "crop-flip-rotate")


@dataclass(frozen=True)
class Draws:
    """A batch's augmentation draws: crop offsets (B,) each, flips (B,) and rotation matrices
    (B, 2, 3); None for a transform the kind leaves out."""

    dy: torch.Tensor | None = None
    dx: torch.Tensor | None = None
    flip: torch.Tensor | None = None
    theta: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Draws:
        return Draws(*(None if t is None else t.to(device) for t in self._parts()))

    def _parts(self) -> tuple[torch.Tensor | None, ...]:
        return self.dy, self.dx, self.flip, self.theta


def draw(kind: str, size: int, generator: torch.Generator) -> Draws:
    """`size` images' draws for `kind` from `generator`, on the CPU, in augment's fixed order."""
    dy = dx = flip = theta = None
    if "crop" in kind:
        dy = torch.randint(0, 2 * CROP_PADDING + 1, (size,), generator=generator)
        dx = torch.randint(0, 2 * CROP_PADDING + 1, (size,), generator=generator)
    if "flip" in kind:
        flip = torch.rand(size, generator=generator) < 0.5
    if "rotate" in kind:
        angles = (torch.rand(size, generator=generator) * 2 - 1)
        angles = angles * ROTATION_DEGREES * math.pi / 180
        cos, sin = torch.cos(angles), torch.sin(angles)
        zeros = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zeros], 1),
                             torch.stack([sin, cos, zeros], 1)], 1)
    return Draws(dy, dx, flip, theta)


def epoch_draws(kind: str, sizes: Sequence[int], generator: torch.Generator,
                device: torch.device | str) -> list[Draws]:
    """Every batch's draws of an epoch (batch sizes `sizes`), drawn in batch order as
    per-batch `draw` calls would, moved to `device` in one copy per kind of draw."""
    if kind == "none":
        return [Draws() for _ in sizes]
    batches = [draw(kind, size, generator) for size in sizes]
    parts = []
    for i in range(4):
        pieces = [b._parts()[i] for b in batches]
        parts.append([None] * len(sizes) if pieces[0] is None else
                     list(torch.cat(pieces).to(device).split(list(sizes))))
    return [Draws(*values) for values in zip(*parts)]


def joined(draws: Sequence[Draws]) -> Draws:
    """Several batches' draws as one batch's, in order (a stacked population's members)."""
    parts = list(zip(*(d._parts() for d in draws)))
    return Draws(*(None if part[0] is None else torch.cat(part) for part in parts))


def augment(images: torch.Tensor, kind: str, generator: torch.Generator,
            fill: torch.Tensor | None = None) -> torch.Tensor:
    """Apply `kind` (none, flip, crop, crop-flip, crop-rotate, crop-flip-rotate) to (B, C, H, W),
    drawing from `generator`.

    `fill` (C,) is the value each channel pads with (default 0). For images normalised per
    channel, the normalised raw 0 (`Normalization.raw_zero`) makes the result the
    normalisation of the augmented raw images, as the published recipe orders them: crop
    and flip select pixels, and bilinear rotation weights sum to one.
    """
    if kind == "none":
        return images
    _check_images(images, kind)
    return apply(images, kind, draw(kind, images.shape[0], generator).to(images.device), fill)


def apply(images: torch.Tensor, kind: str, draws: Draws,
          fill: torch.Tensor | None = None) -> torch.Tensor:
    """`kind` applied to (B, C, H, W) with `draws` on the images' device (`augment`'s math)."""
    if kind == "none":
        return images
    _check_images(images, kind)
    if fill is not None:
        shift = fill.to(device=images.device, dtype=images.dtype)[None, :, None, None]
        return apply(images - shift, kind, draws) + shift
    if draws.dy is not None and draws.dx is not None:
        images = random_crop(images, draws.dy, draws.dx)
    if draws.flip is not None:
        images = torch.where(draws.flip[:, None, None, None], images.flip(-1), images)
    if draws.theta is not None:
        images = random_rotation(images, draws.theta)
    return images


def _check_images(images: torch.Tensor, kind: str) -> None:
    if images.dim() != 4:
        raise ValueError(f"augmentation {kind!r} needs image batches (B, C, H, W), "
                         f"got shape {tuple(images.shape)}")


def random_crop(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Zero-pad by CROP_PADDING and crop back to the original size at offsets (dy, dx)."""
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, [CROP_PADDING] * 4)
    rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]
    index = torch.arange(batch, device=device)[:, None, None, None]
    return padded[index, torch.arange(channels, device=device)[None, :, None, None], rows, cols]


def random_rotation(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its affine matrix `theta` (B, 2, 3) (bilinear, zero fill)."""
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False)
