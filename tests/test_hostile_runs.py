"""Hostile generation runs: smaller specs on a zoo (no silent loss), --prune, --out that is a
file, a broken zoo.json, refused imports that would leave half folders, and Ray's leftovers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generators.cli import main
from generators.plan import make_plan
from analysis.verify import verify
from zoo.folder.reader import ZooReader
from tests.conftest import write_spec
from zoo.specfile import load_spec


def _files(root: Path) -> dict[str, str]:
    """Every file under root by relative path, with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _weights(root: Path) -> dict:
    table = ZooReader(root).table("models", columns=["model_id", "epoch", "seed", "weights"])
    return {(m, e): (s, w) for m, e, s, w in zip(*(table.column(c).to_pylist()
                                                   for c in table.schema.names))}


def _one_line_error(capsys, argv: list[str], message: str) -> None:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert re.search(message, lines[0]), lines[0]


def _grid(load=(4, 8), temperature=(128, 512)) -> dict:
    return {"load": {"axis": "width", "values": list(load)},
            "temperature": {"axis": "batch_size", "values": list(temperature)}}


@pytest.fixture
def zoo_copy(tiny_zoo, tmp_path) -> Path:
    copy = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, copy)
    return copy


SHRINKS = [  # (spec changes, the line): every one would delete committed models
    ({"seeds": [0]}, r"drops seeds 1 from the zoo there, which would delete 4 cells, 4 models, "
                     r"12 model rows \(the seeds they keep train again in 4 of them\); rerun "
                     r"with --prune"),
    ({"seeds": 1}, r"drops seeds 1 from the zoo there, which would delete 4 cells, 4 models"),
    ({"seeds": [1, 2]}, r"drops seeds 0 from .*4 cells, 4 models, 12 model rows"),
    ({"grid": _grid(load=(4,))},
     r"drops grid\.load \(width\) values 8 from .*delete 2 cells, 4 models, 12 model rows;"),
    ({"grid": _grid(temperature=(128,))},
     r"drops grid\.temperature \(batch_size\) values 512 from .*2 cells, 4 models, 12 model"),
    ({"grid": _grid(load=(4, 16))}, r"drops grid\.load \(width\) values 8 from"),
    ({"grid": _grid(load=(8,), temperature=(512,)), "seeds": [1]},
     r"drops seeds 0 and grid\.load \(width\) values 4 and grid\.temperature \(batch_size\) "
     r"values 128 from .*4 cells, 7 models, 21 model rows"),
]


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("changes, message", SHRINKS, ids=[f"shrink-{i}" for i in range(7)])
def test_a_smaller_spec_is_refused_and_nothing_is_deleted(zoo_copy, tmp_path, capsys, changes,
                                                          message, dry_run):
    before = _files(zoo_copy)
    spec = write_spec(tmp_path, **changes)
    argv = ["generate", str(spec), "--out", str(zoo_copy), "--no-progress"]
    _one_line_error(capsys, argv + ["--dry-run"] * dry_run, rf"^zoo: error: {zoo_copy}: "
                                                             rf"this spec {message}")
    assert _files(zoo_copy) == before


def test_prune_dry_run_says_what_goes_and_deletes_nothing(zoo_copy, tmp_path, capsys):
    before = _files(zoo_copy)
    spec = write_spec(tmp_path, grid=_grid(load=(4,)))
    assert main(["generate", str(spec), "--out", str(zoo_copy), "--dry-run", "--prune"]) == 0
    err = capsys.readouterr().err
    assert "2 cells done, 0 to run (pruning grid.load (width) values 8: 2 cells, 4 models, " \
           "12 model rows go)" in err
    assert _files(zoo_copy) == before


def test_prune_of_grid_values_removes_them_from_the_manifest_then_the_files(zoo_copy, tmp_path,
                                                                            capsys):
    before, weights = _files(zoo_copy), _weights(zoo_copy)
    spec = write_spec(tmp_path, grid=_grid(load=(4,)))
    assert main(["generate", str(spec), "--out", str(zoo_copy), "--prune", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"pruned grid.load (width) values 8 from {zoo_copy}: 2 cells, 4 models, 12 model " \
           f"rows" in err
    assert verify(zoo_copy) == []
    kept = _weights(zoo_copy)
    assert len(kept) == 12 and all(weights[key] == value for key, value in kept.items())
    gone = {path for path in before if path not in _files(zoo_copy)}
    assert len(gone) == 8  # 2 cells x (models, pairs, cells Parquet + models HDF5)
    assert all(re.fullmatch(r"(data/(models|pairs|cells)/cell-[\w-]+\.parquet|"
                            r"hdf5/cell-[\w-]+\.h5)", path) for path in gone)
    manifest = json.loads((zoo_copy / "manifest.json").read_text())
    assert len({s["cell_id"] for s in manifest["shards"]}) == 2
    assert manifest["spec_hash"] == load_spec(spec).spec_hash()


def test_prune_of_a_seed_trains_the_kept_seed_again_to_the_same_weights(zoo_copy, tmp_path,
                                                                         capsys):
    weights = _weights(zoo_copy)
    spec = write_spec(tmp_path, seeds=[0])
    assert main(["generate", str(spec), "--out", str(zoo_copy), "--prune", "--no-progress"]) == 0
    assert "pruned seeds 1 from" in capsys.readouterr().err
    kept = _weights(zoo_copy)
    assert len(kept) == 4 * 3 and {seed for seed, _ in kept.values()} == {0}
    assert all(weights[key] == value for key, value in kept.items())
    assert verify(zoo_copy) == []


def test_growth_is_still_growth_and_not_a_shrink(tiny_zoo, tmp_path):
    fingerprint = json.loads((tiny_zoo / "zoo.json").read_text())["data_fingerprint"]
    for changes in ({"seeds": [0, 1, 2]}, {"grid": _grid(load=(4, 8, 16))},
                    {"grid": _grid(temperature=(64, 128, 512))}):
        plan = make_plan(load_spec(write_spec(tmp_path, **changes)), fingerprint, tiny_zoo)
        assert plan.grows and plan.shrink is None
        assert len(plan.done) == (0 if "seeds" in changes else 4)


def test_a_truncated_shard_met_while_counting_a_shrink_is_named(zoo_copy, tmp_path, capsys):
    shard = sorted((zoo_copy / "data" / "models").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    before = _files(zoo_copy)
    argv = ["generate", str(write_spec(tmp_path, seeds=[0])), "--out", str(zoo_copy)]
    _one_line_error(capsys, argv, rf"^zoo: error: {shard}: cannot read its seed column")
    assert _files(zoo_copy) == before


@pytest.mark.parametrize("command", ["generate", "generate-dry-run", "import-ray-tune",
                                     "export-ray-tune"])
def test_out_that_is_a_file_is_one_line_exit_2(tmp_path, capsys, command):
    out = tmp_path / "zoo.txt"
    out.write_text("not a folder")
    source = {"generate": str(write_spec(tmp_path)), "import-ray-tune": str(tmp_path),
              "export-ray-tune": str(tmp_path)}
    argv = [command.replace("-dry-run", ""), source[command.replace("-dry-run", "")],
            "--out", str(out)] + ["--dry-run"] * command.endswith("dry-run")
    _one_line_error(capsys, argv, rf"^zoo: error: --out: {out} is a file, not a folder")
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("content, reason", [
    (b"{not json", r"Expecting property name"),
    (b"[1, 2]", r"expected a mapping with a spec"),
    (b'{"spec": {}, "spec_hash": 3}', r"spec_hash is missing or not a string"),
    (b"[" * 100_000 + b"]" * 100_000, r"maximum recursion depth|expected a mapping"),
])
def test_a_broken_zoo_json_in_out_is_named(zoo_copy, tmp_path, capsys, content, reason):
    (zoo_copy / "zoo.json").write_bytes(content)
    before = _files(zoo_copy)
    argv = ["generate", str(write_spec(tmp_path)), "--out", str(zoo_copy), "--no-progress"]
    _one_line_error(capsys, argv, rf"^zoo: error: {zoo_copy / 'zoo.json'}: not a zoo\.json this "
                                  rf"version can read \(.*({reason})")
    assert _files(zoo_copy) == before


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "empty-folder"])
def test_a_refused_import_leaves_no_half_folder(tmp_path, capsys, existing):
    from tests.test_interop import resnet_state, write_trial

    write_trial(tmp_path / "src" / "trial", 0, resnet_state(0, width=4), width=2)
    out = tmp_path / "new" / "zoo"
    if existing:
        out.mkdir(parents=True)
    _one_line_error(capsys, ["import-ray-tune", str(tmp_path / "src"), "--out", str(out),
                             "--data", "digits"],
                    r"checkpoint_000000/checkpoints: does not match resnet18 width 2")
    assert (list(out.iterdir()) == []) if existing else not (tmp_path / "new").exists()


def _session_processes(session: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(pid) for pid, sid in (line.split() for line in out.splitlines())
            if int(sid) == session]


@pytest.mark.slow
def test_a_killed_drivers_local_ray_runtime_goes_away_by_itself(tmp_path):
    """raylet and GCS die with the driver at once; Ray's dashboard and runtime-env agents
    linger until their 60 s report to the dead GCS times out (hard-coded in Ray 2.60's
    publish_error_to_driver; no Ray option shortens it), then exit on their own."""
    script = ("import os, ray; ray.init(num_cpus=1, include_dashboard=False, "
              "log_to_driver=False); print('ready', flush=True); os.read(0, 1)")
    driver = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, start_new_session=True,
                              env={**os.environ, "RAY_ADDRESS": ""})
    assert driver.stdout.readline().strip() == "ready"
    assert len(_session_processes(driver.pid)) >= 4  # driver, gcs, raylet, agents
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 150
    while _session_processes(driver.pid) and time.monotonic() < deadline:
        time.sleep(1)
    left = _session_processes(driver.pid)
    for pid in left:  # only this test's own session, by id
        os.kill(pid, signal.SIGKILL)
    assert left == []
