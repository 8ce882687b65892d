"""Per-channel input normalisation of image data sets, with statistics of their train set."""

from __future__ import annotations

import torch

from zoo.datasets.base import DataBundle, DataInfo, Normalization


def is_image(info: DataInfo) -> bool:
    """Classification inputs of shape (C, H, W): the data sets PTMZ normalises per channel."""
    return info.task == "classification" and len(info.input_shape) == 3


CHUNK = 4096  # images per float64 pass: bounds the extra memory on Tiny-ImageNet-sized sets


def channel_statistics(images: torch.Tensor) -> Normalization:
    """Mean and standard deviation (population, float64) of each channel of (N, C, H, W)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(CHUNK):
        total += chunk.to(torch.float64).sum(dim=(0, 2, 3))
    count = images.numel() // channels
    mean = total / count
    squares = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(CHUNK):
        squares += (chunk.to(torch.float64) - mean[:, None, None]).square().sum(dim=(0, 2, 3))
    std = (squares / count).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays as it is
    return Normalization(tuple(mean.tolist()), tuple(std.tolist()))


def normalize_images(bundle: DataBundle, stats: Normalization | None = None) -> DataBundle:
    """The bundle with train and test images mapped to (x − mean) / std per channel.

    The image tensors are changed in place (a Tiny-ImageNet copy would cost 4.9 GB); pass a
    freshly built bundle.

    Args:
        bundle: an image classification bundle, not yet normalised.
        stats: statistics to apply; None: those of the bundle's own train set.
    Returns:
        a new bundle carrying `normalization` (its fingerprint changes with the tensors).
    """
    if bundle.normalization is not None:
        raise ValueError(f"{bundle.name}: the images are already normalised")
    stats = stats or channel_statistics(bundle.train[0])
    mean = torch.tensor(stats.mean, dtype=bundle.train[0].dtype)[:, None, None]
    std = torch.tensor(stats.std, dtype=bundle.train[0].dtype)[:, None, None]
    for images in (bundle.train[0], bundle.test[0]):
        images.sub_(mean.to(images.device)).div_(std.to(images.device))
    return DataBundle(bundle.name, bundle.info, bundle.train, bundle.test, bundle.extras, stats)
