"""`zoo generate --out s3://...` against a real S3 server on loopback (moto): the zoo equals
the one generated locally, shard for shard; one writer; unlisted objects removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from generators.cli import main
from tests.conftest import write_spec
from zoo.folder.manifest import Manifest
from zoo.folder.reader import ZooReader
from zoo.folder.location import open_location
from zoo.folder.storelock import StoreLock


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
                                                         "README.md"}  # and no lock


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
