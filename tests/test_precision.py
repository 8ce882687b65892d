"""bf16 autocast as an opt-in, and the precision flags zoo.json records."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from zoo import datasets
from zoo.datasets.base import DataBundle
from zoo.precision import autocast, precision_record
from zoo.specfile import parse_spec
from zoo.train import train_model


def test_autocast_bf16_only_when_asked() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("fp32", "cpu"):
        assert (a @ b).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"precision: 'fp16' is not allowed; expected fp32"):
        autocast("fp16", "cpu")


def test_precision_record_reports_torch_flags() -> None:
    record = precision_record("bf16")
    assert record == {"training": "bf16",
                      "float32_matmul_precision": torch.get_float32_matmul_precision(),
                      "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                      "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                      "cudnn_deterministic": torch.backends.cudnn.deterministic}


def test_bf16_training_differs_from_fp32_and_trains() -> None:
    full = datasets.load("mnist1d")
    bundle = DataBundle(full.name, full.info, tuple(t[:256] for t in full.train),
                        tuple(t[:128] for t in full.test))
    spec = parse_spec({"name": "p", "data": {"name": "mnist1d"},
                       "architecture": {"family": "mlp", "width": 16, "args": {"depth": 1}},
                       "training": {"epochs": 2, "batch_size": 32},
                       "grid": {"load": {"axis": "width", "values": [16]},
                                "temperature": {"axis": "batch_size", "values": [32]}},
                       "seeds": [0]})
    bf16 = replace(spec, training=replace(spec.training, precision="bf16"))
    job = spec.jobs(bundle.fingerprint())[0]
    low, full_precision = train_model(bf16, job, bundle), train_model(spec, job, bundle)
    last, reference = low.checkpoints[-1], full_precision.checkpoints[-1]
    assert last.finite and last.train["loss"] < low.checkpoints[0].train["loss"]
    assert last.state_dict["1.weight"].dtype == torch.float32  # weights stay fp32
    assert not torch.equal(last.state_dict["1.weight"], reference.state_dict["1.weight"])
