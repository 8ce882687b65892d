"""Seeded training-time augmentation of image batches (random crop, flip, rotation)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CROP_PADDING = 4  # pixels of zero padding before a random crop, as torchvision RandomCrop(pad 4)
ROTATION_DEGREES = 20.0


def augment(images: torch.Tensor, kind: str, generator: torch.Generator,
            fill: torch.Tensor | None = None) -> torch.Tensor:
    """Apply `kind` (none, flip, crop, crop-flip, crop-rotate, crop-flip-rotate) to (B, C, H, W).

    `fill` (C,) is the value each channel pads with (default 0). For images normalised per
    channel, the normalised raw 0 (`Normalization.raw_zero`) makes the result the
    normalisation of the augmented raw images, as the published recipe orders them: crop
    and flip select pixels, and bilinear rotation weights sum to one.
    """
    if kind == "none":
        return images
    if images.dim() != 4:
        raise ValueError(f"augmentation {kind!r} needs image batches (B, C, H, W), "
                         f"got shape {tuple(images.shape)}")
    if fill is not None:
        shift = fill.to(device=images.device, dtype=images.dtype)[None, :, None, None]
        return augment(images - shift, kind, generator) + shift
    if "crop" in kind:
        images = random_crop(images, generator)
    if "flip" in kind:
        flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if "rotate" in kind:
        images = random_rotation(images, generator)
    return images


def random_crop(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by CROP_PADDING and crop back to the original size at a random offset."""
    batch, _, height, width = images.shape
    padded = F.pad(images, [CROP_PADDING] * 4)
    dy = torch.randint(0, 2 * CROP_PADDING + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * CROP_PADDING + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, None, :]
    index = torch.arange(batch)[:, None, None, None]
    channels = torch.arange(images.shape[1])[None, :, None, None]
    return padded[index.to(padded.device), channels.to(padded.device), rows.to(padded.device),
                  cols.to(padded.device)]


def random_rotation(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotate each image by a uniform angle in ±ROTATION_DEGREES (bilinear, zero fill)."""
    angles = (torch.rand(images.shape[0], generator=generator) * 2 - 1)
    angles = angles * ROTATION_DEGREES * math.pi / 180
    cos, sin = torch.cos(angles), torch.sin(angles)
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False)
