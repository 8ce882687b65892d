"""`zoo generate --out s3://...` against a real S3 server on loopback (moto): the zoo equals
the one generated locally, shard for shard; one writer; unlisted objects removed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from generators.cli import main
from tests.conftest import write_spec
from zoo.folder.manifest import Manifest
from zoo.folder.reader import ZooReader
from zoo.folder.location import open_location
from zoo.folder.storelock import StoreLock
from zoo.folder.sync import sync

ROOT = Path(__file__).resolve().parent.parent


WALL_CLOCK = "train_seconds"  # the one column that differs between two runs of a spec


def digests(manifest: Manifest) -> dict[tuple[str, str, str], str]:
    """(table, format, cell) -> sha256 of each shard but the models Parquet shards (their
    train_seconds differ between runs), and of each layout (shard names hold random tokens)."""
    shards = {(s.table, s.format, s.cell_id): s.sha256 for s in manifest.shards
              if (s.table, s.format) != ("models", "parquet")}
    return {**shards, **{("layout", key, ""): d for key, d in manifest.layouts.items()}}


def models_rows(reader: ZooReader) -> dict[str, str]:
    """cell -> its models shard's rows but the wall clock, as text (NaN equals NaN)."""
    return {s.cell_id: repr(reader.parquet(s).drop_columns([WALL_CLOCK]).to_pylist())
            for s in reader.manifest.shards_of("models")}


@pytest.fixture(scope="module")
def generated(s3_store, ray_runtime, tmp_path_factory) -> str:
    from generators.generate import generate
    from zoo.specfile import load_spec

    url = s3_store.url("generated")
    spec = load_spec(write_spec(tmp_path_factory.mktemp("spec")))
    result = generate(spec, url, progress=False)
    assert result.committed == 4 and not result.failures
    return url


def test_a_zoo_generated_to_s3_equals_the_local_one_shard_for_shard(generated, tiny_zoo,
                                                                    s3_store):
    stored, local = ZooReader(generated), ZooReader(tiny_zoo)
    assert len(stored.manifest.shards) == len(local.manifest.shards)
    assert digests(stored.manifest) == digests(local.manifest)
    assert models_rows(stored) == models_rows(local)
    listed = {s.path for s in stored.manifest.shards} | {f"layouts/{k}.json"
                                                         for k in stored.manifest.layouts}
    assert set(s3_store.keys("generated")) == listed | {"manifest.json", "zoo.json",
                                                         "README.md", "layouts.parquet"}  # no lock


def test_zoo_verify_holds_on_the_generated_zoo(generated, capsys):
    assert main(["verify", generated, "--deep"]) == 0


def test_a_second_writer_is_refused_in_one_line(generated, tiny_zoo, capsys):
    spec = Path(tiny_zoo).parent / "tiny.yaml"
    with StoreLock(open_location(generated)):
        assert main(["generate", str(spec), "--out", generated, "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"zoo: error: {generated}: another `zoo generate` writes this zoo")
    assert "\n" not in error


def test_a_rerun_trains_nothing_and_removes_unlisted_objects(generated, tiny_zoo, s3_store,
                                                            capsys):
    spec = Path(tiny_zoo).parent / "tiny.yaml"
    before = s3_store.keys("generated")
    open_location(generated).write_bytes("data/models/stray.parquet", b"a killed run's object")
    assert main(["generate", str(spec), "--out", generated, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "(0 cells trained this run" in captured.out
    assert f"removed 1 unlisted files of an interrupted run from {generated}" in captured.err
    assert s3_store.keys("generated") == before


@pytest.fixture(scope="module")
def address(ray_runtime) -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def _generate(spec: Path, url: str, address: str, fault: str | None = None,
              *extra: str) -> subprocess.CompletedProcess:
    """`zoo generate --out url` in a subprocess joined to the session's Ray runtime; `fault`
    runs it through tests.faults."""
    cli = ["generators.cli"] if fault is None else ["tests.faults", fault]
    return subprocess.run([sys.executable, "-m", *cli, "generate", str(spec), "--out", url,
                           "--address", address, "--no-progress", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)


def _weights(root: str | Path) -> dict:
    table = ZooReader(root).table("models", columns=["model_id", "epoch", "weights"])
    return {(m, e): w for m, e, w in zip(*(table.column(c).to_pylist() for c in table.schema.names))}


@pytest.mark.slow
def test_a_worker_killed_inside_a_model_resumes_to_the_same_zoo(tiny_zoo, s3_store, address,
                                                                tmp_path):
    """The killed worker's scratch goes with it (as on another node): the retried task resumes
    from the state on the store, inside its model, to the identical zoo."""
    url, marker = s3_store.url("resumed"), tmp_path / "killed-once"
    done = _generate(tiny_zoo.parent / "tiny.yaml", url, address, f"kill-once-stored:{marker}")
    assert done.returncode == 0, done.stderr
    assert marker.exists()  # a worker died once a training state was on the store
    resumed = Path(f"{marker}.resumed").read_text().split()
    assert resumed and int(resumed[1]) >= 1  # from a state the dead worker stored, mid-model
    stored, local = ZooReader(url), ZooReader(tiny_zoo)
    assert digests(stored.manifest) == digests(local.manifest)
    assert models_rows(stored) == models_rows(local)
    assert not any(k.startswith("state/") for k in s3_store.keys("resumed"))  # cleared


@pytest.mark.slow
def test_a_failing_cell_is_recorded_in_the_store_and_a_rerun_retries_it(tiny_zoo, s3_store,
                                                                        address):
    url, spec = s3_store.url("faulty"), tiny_zoo.parent / "tiny.yaml"
    victim = sorted(ZooReader(tiny_zoo).manifest.cell_ids())[0]
    failed = _generate(spec, url, address, f"raise:{victim}")
    assert failed.returncode == 1
    assert f"details in {url}/failures/{victim}.json" in failed.stderr
    record = json.loads(open_location(url).read_bytes(f"failures/{victim}.json", "failure"))
    assert "Traceback" in record["traceback"]
    rerun = _generate(spec, url, address)
    assert rerun.returncode == 0, rerun.stderr
    assert "3 cells done, 1 to run" in rerun.stderr
    assert not any(k.startswith("failures/") for k in s3_store.keys("faulty"))
    assert _weights(url) == _weights(tiny_zoo)


@pytest.mark.slow
def test_a_zoo_on_the_store_grows_by_a_seed_and_prunes_back(tiny_zoo, s3_store, address,
                                                            tmp_path):
    url = s3_store.url("grown")
    sync(tiny_zoo, url)
    grown = _generate(write_spec(tmp_path, seeds=[0, 1, 2]), url, address)
    assert grown.returncode == 0, grown.stderr
    assert "growing an existing zoo" in grown.stderr
    before, after = _weights(tiny_zoo), _weights(url)
    assert len(after) == len(before) * 3 // 2
    assert all(after[key] == value for key, value in before.items())
    refused = _generate(tiny_zoo.parent / "tiny.yaml", url, address)
    assert refused.returncode == 2 and "rerun with --prune" in refused.stderr
    pruned = _generate(tiny_zoo.parent / "tiny.yaml", url, address, None, "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert _weights(url) == before
    listed = {s.path for s in ZooReader(url).manifest.shards}
    assert {k for k in s3_store.keys("grown") if k.startswith(("data/", "hdf5/"))} == listed
