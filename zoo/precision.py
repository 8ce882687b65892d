"""Numeric precision of training: bf16 autocast when a spec opts in, and the flags to record."""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch


def autocast(precision: str, device: torch.device | str) -> ContextManager[Any]:
    """bf16 autocast of forward and backward on `device` for "bf16"; nothing for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision: {precision!r} is not allowed; expected fp32 or bf16")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def precision_record(precision: str) -> dict[str, Any]:
    """What zoo.json records: the spec's training precision and torch's float32 flags as this
    process reports them (TF32 in cuDNN convolutions is on by PyTorch's default)."""
    return {"training": precision,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic)}
