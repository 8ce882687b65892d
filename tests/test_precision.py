"""bf16 autocast as an opt-in, and the precision flags zoo.json records."""

from __future__ import annotations

import math
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
    assert record == {"training": "bf16", "device": "cpu", "deterministic": True,
                      "float32_matmul_precision": torch.get_float32_matmul_precision(),
                      "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                      "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    assert precision_record("fp32", "cuda", deterministic=False)["deterministic"] is False
    assert precision_record("fp32", "cpu", deterministic=False)["deterministic"] is True


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


def test_recompute_tolerance_follows_device_and_precision() -> None:
    from zoo.precision import CPU_FP32, CUDA_FP32, CUDA_REDUCED, recompute_tolerance

    record = precision_record("fp32")
    assert record["device"] == "cpu" and precision_record("fp32", "cuda:0")["device"] == "cuda"
    strict = {"cudnn_allow_tf32": False, "cuda_matmul_allow_tf32": False,
              "float32_matmul_precision": "highest"}
    cases = [(None, CPU_FP32), ({}, CPU_FP32), ({**record, "cudnn_allow_tf32": True}, CPU_FP32),
             ({**record, "training": "bf16"}, CPU_FP32),  # evaluation runs fp32 anyway
             ({**record, **strict, "device": "cuda"}, CUDA_FP32),
             ({**record, **strict, "device": "cuda", "cudnn_allow_tf32": True}, CUDA_REDUCED),
             ({**record, **strict, "device": "cuda", "float32_matmul_precision": "high"},
              CUDA_REDUCED),
             ({**record, **strict, "device": "cuda", "training": "bf16"}, CUDA_REDUCED)]
    for given, expected in cases:
        assert recompute_tolerance(given) == expected, given
    assert CPU_FP32.rel == 1e-6
    for tolerance, passes in ((CPU_FP32, False), (CUDA_FP32, False), (CUDA_REDUCED, True)):
        assert tolerance.accepts("loss", 1.0001, 1.0) is passes
        assert tolerance.accepts("error", 0.302, 0.3) is passes  # two of 1000 samples flipped
    assert CPU_FP32.accepts("loss", math.nan, math.nan)
    assert not CUDA_REDUCED.accepts("loss", math.nan, 1.0)


def test_deterministic_is_on_by_default_and_leaves_ids_and_the_cpu_alone() -> None:
    from zoo.precision import set_deterministic

    body = {"name": "d", "data": {"name": "mnist1d"},
            "architecture": {"family": "mlp", "args": {"depth": 1}},
            "grid": {"load": {"axis": "width", "values": [8]},
                     "temperature": {"axis": "batch_size", "values": [32]}}, "seeds": [0]}
    default = parse_spec(body)
    off = parse_spec({**body, "training": {"deterministic": False}})
    assert default.training.deterministic and not off.training.deterministic
    assert "deterministic" not in default.to_dict()["training"]  # old zoos keep their hash
    assert off.to_dict()["training"]["deterministic"] is False
    assert [j.model_id for j in default.jobs("fp")] == [j.model_id for j in off.jobs("fp")]
    flags = (torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    set_deterministic(True, "cpu")
    assert (torch.backends.cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled()) == flags
