"""Shared fixtures: one Ray runtime per test session and one tiny real zoo to read from."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from tests.s3server import point_environment

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
if "PHASE_ZOO_CACHE" not in os.environ:  # caches and scratch folders of zoos on a store
    os.environ["PHASE_ZOO_CACHE"] = tempfile.mkdtemp(prefix="phase-zoo-cache-")
    atexit.register(shutil.rmtree, os.environ["PHASE_ZOO_CACHE"], True)
point_environment()  # AWS_* at a loopback S3 server (started by s3_store), for Ray workers too
torch.set_num_threads(1)  # the same thread count as Ray workers: evaluations match bit for bit

TINY_SPEC = {
    "name": "tiny",
    "description": "Two widths x two batch sizes of tiny MLPs on mnist1d, for tests.",
    "architecture": {"family": "mlp", "width": 8, "args": {"depth": 1}},
    "data": {"name": "mnist1d"},
    "training": {"epochs": 2, "learning_rate": 0.05},
    "grid": {"load": {"axis": "width", "values": [4, 8]},
             "temperature": {"axis": "batch_size", "values": [128, 512]}},
    "seeds": [0, 1],
    "checkpoints": {"every": 1},
    "metrics": {"epochs": ["last"],
                "hessian": {"batches": 2, "batch_size": 32, "max_iter": 20},
                "similarity": {"batches": 2, "batch_size": 64},
                "curve": {"steps": 40, "batch_size": 64}},
}


def write_spec(folder: Path, **changes: object) -> Path:
    """Write TINY_SPEC with top-level `changes` to folder/spec.yaml and return its path."""
    body = {**TINY_SPEC, **changes}
    path = folder / f"{body['name']}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray runtime shared by the whole session."""
    from generators.executor import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="session")
def s3_store():
    """A real S3-API server on loopback with one bucket; AWS_* variables point at it."""
    from tests.s3server import serve

    yield from serve()


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory, ray_runtime) -> Path:
    """A real tiny zoo generated once per session (read-only for tests)."""
    from generators.generate import generate
    from zoo.specfile import load_spec

    folder = tmp_path_factory.mktemp("zoo")
    spec = load_spec(write_spec(folder))
    out = folder / "tiny-zoo"
    generate(spec, out, progress=False)
    return out


@pytest.fixture
def zoo(tiny_zoo: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny zoo, for tests that change or attack it."""
    copy = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, copy)
    return copy
