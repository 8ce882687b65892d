"""What every data set hands to architectures and training: its shape facts and its tensors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import torch

Task = Literal["classification", "language_model", "pinn"]


@dataclass(frozen=True)
class DataInfo:
    """Shape facts an architecture needs.

    Args:
        task: "classification" (x, y class ids), "language_model" (x tokens, y next tokens),
            or "pinn" (collocation points; targets come from the PDE's exact solution).
        input_shape: shape of one input sample, e.g. (40,) for mnist1d, (1, 8, 8) for digits,
            (seq_len,) for text, (2,) for (x, t) PDE points.
        num_outputs: classes (classification), vocabulary size (language_model), 1 (pinn).
    """

    task: Task
    input_shape: tuple[int, ...]
    num_outputs: int


@dataclass(frozen=True)
class Normalization:
    """Per-channel input normalisation x -> (x − mean) / std, with the train set's statistics.

    Args:
        mean, std: (C,) per channel of the raw images (pixel values in [0, 1]).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        """{"mean": [...], "std": [...]} for zoo.json."""
        return {"mean": list(self.mean), "std": list(self.std)}

    def raw_zero(self) -> torch.Tensor:
        """(C,) float32: where a raw 0 pixel lands, the value crop and rotation pad with."""
        return torch.tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32)


@dataclass(frozen=True)
class DataBundle:
    """A data set in memory: train and test tensors plus task-specific extras.

    classification / language_model: train = (x, y), test = (x, y).
    pinn: train = (points,) collocation points (N, 2) as (x, t); test = (points,) on a grid;
    extras holds "initial" (M, 2) points at t = 0 and "boundary_left"/"boundary_right" (K, 2).
    normalization: the per-channel statistics already applied to image inputs, or None.
    """

    name: str
    info: DataInfo
    train: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    normalization: Normalization | None = None

    @property
    def num_train(self) -> int:
        return int(self.train[0].shape[0])

    def fingerprint(self) -> str:
        """sha256 over every tensor's dtype, shape and bytes, in a fixed order."""
        digest = hashlib.sha256()
        named = [("train", t) for t in self.train] + [("test", t) for t in self.test]
        named += sorted(self.extras.items())
        for name, tensor in named:
            t = tensor.detach().contiguous().cpu()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()

    def to(self, device: torch.device | str) -> DataBundle:
        """The same data on `device` (a no-op when it is already there)."""
        return DataBundle(self.name, self.info, tuple(t.to(device) for t in self.train),
                          tuple(t.to(device) for t in self.test),
                          {k: v.to(device) for k, v in self.extras.items()}, self.normalization)

    def subsample(self, fraction: float) -> DataBundle:
        """Keep a deterministic `fraction` of the training set (the same rows for every seed)."""
        if fraction >= 1.0:
            return self
        keep = max(1, round(self.num_train * fraction))
        order = torch.randperm(self.num_train, generator=torch.Generator().manual_seed(0))
        index = order[:keep].sort().values
        train = tuple(t[index] for t in self.train)
        return DataBundle(self.name, self.info, train, self.test, self.extras, self.normalization)
