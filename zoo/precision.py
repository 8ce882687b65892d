"""Numeric precision of training: bf16 autocast when a spec opts in, and the flags to record."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any, ContextManager, Mapping

import torch


def autocast(precision: str, device: torch.device | str) -> ContextManager[Any]:
    """bf16 autocast of forward and backward on `device` for "bf16"; nothing for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision: {precision!r} is not allowed; expected fp32 or bf16")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (CUDA >= 10.2)


def set_deterministic(deterministic: bool, device: torch.device | str) -> None:
    """On CUDA with `deterministic` (training.deterministic, on by default): deterministic
    cuDNN kernels (no benchmark autotuning), torch's deterministic algorithms (warning, not
    raising, where an op has none) and cuBLAS's fixed workspace, so the same spec gives the
    same weights on the same GPU. Nothing changes on the CPU, whose kernels are deterministic."""
    if torch.device(device).type != "cuda" or not deterministic:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def precision_record(precision: str, device: torch.device | str = "cpu",
                     deterministic: bool = True) -> dict[str, Any]:
    """What zoo.json records: the spec's training precision, the device type that trained and
    evaluated, whether CUDA kernels were deterministic (training.deterministic; the CPU's
    always are) and torch's float32 flags as this process reports them (TF32 in cuDNN
    convolutions is on by PyTorch's default)."""
    kind = torch.device(device).type
    return {"training": precision, "device": kind,
            "deterministic": deterministic or kind == "cpu",
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}


@dataclass(frozen=True)
class Tolerance:
    """How far a CPU re-evaluation of a stored checkpoint may fall from its recorded metrics."""

    rel: float  # relative, of loss and error
    error_abs: float  # absolute, of the error: near-tie predictions flip between devices
    made: str  # how the recorded metrics were computed, for messages

    def accepts(self, name: str, value: float, recorded: float) -> bool:
        """Whether `value` recomputes `recorded` (metric `name`: "loss" or "error")."""
        if math.isnan(value) and math.isnan(recorded):
            return True
        return math.isclose(value, recorded, rel_tol=self.rel,
                            abs_tol=self.error_abs if name == "error" else 1e-9)


CPU_FP32 = Tolerance(1e-6, 1e-9, "fp32 on the CPU")
CUDA_FP32 = Tolerance(1e-5, 1e-3, "fp32 on CUDA")
CUDA_REDUCED = Tolerance(1e-2, 5e-3, "TF32 or bf16 on CUDA")


def recompute_tolerance(record: Mapping[str, Any] | None) -> Tolerance:
    """The tolerance of a zoo whose zoo.json records `record` (its "precision"). Evaluation
    runs in fp32 (bf16 autocasts training only), so a CPU zoo recomputes to 1e-6 whatever it
    trained in; on CUDA, TF32 (cuDNN's default for convolutions) or bf16 loosen it. A record
    without a device (older zoos) is held to the CPU's."""
    if not record or record.get("device") != "cuda":
        return CPU_FP32
    tf32 = bool(record.get("cudnn_allow_tf32") or record.get("cuda_matmul_allow_tf32")) or \
        record.get("float32_matmul_precision", "highest") != "highest"
    return CUDA_REDUCED if tf32 or record.get("training") == "bf16" else CUDA_FP32
