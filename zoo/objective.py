"""Objectives per task kind: the training loss of a batch and full-set evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.datasets.base import DataBundle

EVAL_CHUNK = 1024  # samples per forward pass during evaluation (bounds memory, not results)


def output_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, C) or (B, T, V) against class ids (B,) or (B, T)."""
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


@dataclass(frozen=True)
class Objective:
    """Loss and evaluation for one data bundle; `beta` is the PDE coefficient for PINNs."""

    bundle: DataBundle
    beta: float = 1.0

    @property
    def task(self) -> str:
        return self.bundle.info.task

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Mean training loss of one batch (for PINNs: residual + initial + boundary MSE)."""
        if self.task == "pinn":
            return self._pinn_loss(model, batch[0])
        inputs, targets = batch
        return output_loss(model(inputs), targets)

    @torch.no_grad()
    def _classify(self, model: torch.nn.Module, tensors: tuple[torch.Tensor, ...]) -> dict:
        inputs, targets = tensors
        total_loss, correct, count = 0.0, 0, 0
        for start in range(0, inputs.shape[0], EVAL_CHUNK):
            x, y = inputs[start:start + EVAL_CHUNK], targets[start:start + EVAL_CHUNK]
            out = model(x)
            flat_out, flat_y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
            total_loss += F.cross_entropy(flat_out, flat_y, reduction="sum").item()
            correct += (flat_out.argmax(-1) == flat_y).sum().item()
            count += flat_y.numel()
        accuracy = correct / count
        return {"loss": total_loss / count, "accuracy": accuracy, "error": 1.0 - accuracy}

    def evaluate(self, model: torch.nn.Module, split: str) -> dict[str, float | None]:
        """Loss, accuracy and error over the full `split` ('train' or 'test') in eval mode."""
        tensors = self.bundle.train if split == "train" else self.bundle.test
        was_training = model.training
        model.eval()
        try:
            if self.task != "pinn":
                return self._classify(model, tensors)
            return self._pinn_evaluate(model, tensors[0], split)
        finally:
            model.train(was_training)

    def _pinn_loss(self, model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
        points = points.detach().requires_grad_(True)
        u = model(points)
        grad = torch.autograd.grad(u.sum(), points, create_graph=True)[0]
        residual = grad[:, 1] + self.beta * grad[:, 0]  # u_t + beta u_x
        initial = self.bundle.extras["initial"]
        initial_error = model(initial).squeeze(-1) - torch.sin(initial[:, 0])
        left = model(self.bundle.extras["boundary_left"])
        right = model(self.bundle.extras["boundary_right"])
        return residual.pow(2).mean() + initial_error.pow(2).mean() + (left - right).pow(2).mean()

    def _pinn_evaluate(self, model: torch.nn.Module, points: torch.Tensor,
                       split: str) -> dict[str, float | None]:
        with torch.no_grad():
            predicted = torch.cat([model(points[s:s + EVAL_CHUNK])
                                   for s in range(0, points.shape[0], EVAL_CHUNK)]).squeeze(-1)
        exact = torch.sin(points[:, 0] - self.beta * points[:, 1])
        error = (torch.linalg.vector_norm(predicted - exact)
                 / torch.linalg.vector_norm(exact)).item()
        with torch.enable_grad():
            loss = self._pinn_loss(model, points).item() if split == "train" else float(
                F.mse_loss(predicted, exact).item())
        return {"loss": loss, "accuracy": None, "error": error}
