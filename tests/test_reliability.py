"""Process-level reliability: SIGKILL and resume, growth, failed cells, dead workers, full
disks, and `zoo verify` on corrupted folders. Runs `zoo generate` as real subprocesses that
join the session's Ray runtime."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generators.cli import main
from tests.conftest import write_spec
from zoo.errors import IntegrityError
from zoo.folder.reader import ZooReader


@pytest.fixture(scope="module")
def address(ray_runtime) -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def _generate(spec: Path, out: Path, address: str, fault: str | None = None,
              **popen) -> subprocess.Popen:
    """`zoo generate` in a subprocess; `fault` runs it through tests.faults."""
    cli = ["generators.cli"] if fault is None else ["tests.faults", fault]
    command = [sys.executable, "-m", *cli, "generate", str(spec), "--out", str(out),
               "--address", address, "--no-progress", "--formats", "parquet,hdf5"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)


def _weights(root: Path) -> dict:
    table = ZooReader(root).table("models", columns=["model_id", "epoch", "weights"])
    return {(m, e): w for m, e, w in zip(*(table.column(c).to_pylist() for c in table.schema.names))}


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def _committed(out: Path) -> int:
    manifest = out / "manifest.json"
    if not manifest.exists():
        return 0
    return len({s["cell_id"] for s in json.loads(manifest.read_text())["shards"]})


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [0, 1, 3])
def test_sigkill_at_several_points_then_resume_gives_the_same_zoo(tiny_zoo, tmp_path, address,
                                                                   kill_after):
    spec, out = tiny_zoo.parent / "tiny.yaml", tmp_path / "killed"
    process = _generate(spec, out, address)
    if kill_after == 0:
        _wait_for(lambda: (out / "zoo.json").exists())
    else:
        _wait_for(lambda: _committed(out) >= kill_after)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed = _committed(out)
    resumed = _generate(spec, out, address)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"{committed} cells done, {4 - committed} to run" in err
    assert _weights(out) == _weights(tiny_zoo)
    assert not list(out.rglob("*.partial"))
    assert main(["verify", str(out)]) == 0


@pytest.mark.slow
def test_growing_a_zoo_by_a_seed_keeps_the_models_it_had(tiny_zoo, tmp_path, address):
    grown = tmp_path / "grown"
    shutil.copytree(tiny_zoo, grown)
    body = json.loads((tiny_zoo / "zoo.json").read_text())
    spec = write_spec(tmp_path, seeds=[0, 1, 2])
    process = _generate(spec, grown, address)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "growing an existing zoo" in err
    before, after = _weights(tiny_zoo), _weights(grown)
    assert len(after) == len(before) * 3 // 2
    assert all(after[key] == value for key, value in before.items())
    assert json.loads((grown / "zoo.json").read_text())["spec_hash"] != body["spec_hash"]
    assert ZooReader(grown).table("pairs").num_rows == 4 * 3


@pytest.mark.slow
def test_a_failing_cell_is_recorded_the_rest_finishes_and_a_rerun_retries_it(
        tiny_zoo, tmp_path, address):
    spec, out = tiny_zoo.parent / "tiny.yaml", tmp_path / "faulty"
    victim = sorted(ZooReader(tiny_zoo).manifest.cell_ids())[0]
    process = _generate(spec, out, address, fault=f"raise:{victim}")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1
    assert f"failed: cell {victim} (2 models): RuntimeError: injected fault" in err
    record = json.loads((out / "failures" / f"{victim}.json").read_text())
    assert record["model_ids"] and "Traceback" in record["traceback"]
    assert ZooReader(out).manifest.cell_ids() == ZooReader(tiny_zoo).manifest.cell_ids() - {victim}
    rerun = _generate(spec, out, address)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "3 cells done, 1 to run" in err
    assert not (out / "failures" / f"{victim}.json").exists()
    assert _weights(out) == _weights(tiny_zoo)


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_retried(tiny_zoo, tmp_path, address):
    spec, out = tiny_zoo.parent / "tiny.yaml", tmp_path / "retried"
    marker = tmp_path / "killed-once"
    process = _generate(spec, out, address, fault=f"kill-once:{marker}")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert marker.exists()  # a worker process did die
    assert _weights(out) == _weights(tiny_zoo)


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (8_000, 8_000))  # above the manifest, below a shard


@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_that_keeps_the_manifest(tiny_zoo, tmp_path, address):
    grown = tmp_path / "full"
    shutil.copytree(tiny_zoo, grown)
    manifest = (grown / "manifest.json").read_bytes()
    spec = write_spec(tmp_path, seeds=[0, 1, 2])
    process = _generate(spec, grown, address, preexec_fn=_limit_file_size)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2
    errors = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert len(errors) == 1 and "Traceback" not in err  # (Ray's own logs hit the limit too)
    assert "cannot write while committing cell" in errors[0]
    assert "File too large" in errors[0]
    before, after = json.loads(manifest), json.loads((grown / "manifest.json").read_bytes())
    for key in ("shards", "layouts", "stacked"):  # every committed cell is still listed
        assert after[key] == before[key], key
    # the run started: zoo.json holds the grown spec, and the manifest its hash and sha256
    assert after["spec_hash"] == ZooReader(grown).record.spec_hash != before["spec_hash"]
    assert main(["verify", str(grown)]) == 1  # the grown spec's counts are not met yet...


def test_verify_names_a_corrupted_shard_and_the_reader_refuses_it(tiny_zoo, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_zoo, broken)
    shard = sorted((broken / "data" / "models").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{shard}: sha256 does not match the manifest" in err
    with pytest.raises(IntegrityError, match=shard.name):
        ZooReader(broken).table("models")


def test_verify_recomputes_stored_checkpoints(tiny_zoo, capsys):
    assert main(["verify", str(tiny_zoo), "--recompute", "4"]) == 0
    assert "4 checkpoints recompute to their metrics" in capsys.readouterr().out


def test_verify_catches_a_manifest_that_lies_about_rows(tiny_zoo, tmp_path, capsys):
    lying = tmp_path / "lying"
    shutil.copytree(tiny_zoo, lying)
    body = json.loads((lying / "manifest.json").read_text())
    body["shards"][0]["rows"] += 1
    (lying / "manifest.json").write_text(json.dumps(body))
    assert main(["verify", str(lying)]) == 1
    assert "the manifest says" in capsys.readouterr().err


def test_a_manifest_path_leaving_the_folder_is_refused(tiny_zoo, tmp_path, capsys):
    escaping = tmp_path / "escaping"
    shutil.copytree(tiny_zoo, escaping)
    body = json.loads((escaping / "manifest.json").read_text())
    body["shards"][0]["path"] = "../../etc/passwd"
    (escaping / "manifest.json").write_text(json.dumps(body))
    assert main(["info", str(escaping)]) == 2
    assert "leaves the zoo folder" in capsys.readouterr().err


@pytest.mark.slow
def test_a_worker_killed_inside_a_model_resumes_from_its_saved_state(tiny_zoo, tmp_path, address):
    spec, out = tiny_zoo.parent / "tiny.yaml", tmp_path / "resumed"
    marker = tmp_path / "killed-once"
    process = _generate(spec, out, address, fault=f"kill-once-saved:{marker}")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert marker.exists()  # a worker died while a training state was saved
    assert "discarded" not in err  # its own state is resumed, never thrown away
    assert _weights(out) == _weights(tiny_zoo)
    assert not (out / "state").exists()  # every committed task's states are deleted
    assert not (tiny_zoo / "state").exists()
