"""The working directory is not code: Ray workers import the installed package, never a `zoo/`
in the folder `zoo generate` runs from (planted code, or the output folder itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_spec
from zoo.folder.reader import ZooReader

ZOO_COMMAND = Path(sys.executable).parent / "zoo"  # the console script, as a user runs it


def _generate(folder: Path, out: str) -> subprocess.CompletedProcess:
    spec = write_spec(folder, grid={"load": {"axis": "width", "values": [4]},
                                    "temperature": {"axis": "batch_size", "values": [512]}})
    return subprocess.run([str(ZOO_COMMAND), "generate", spec.name, "--out", out],
                          cwd=folder, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_DATASETS_OFFLINE": "1"})


@pytest.mark.slow
def test_code_in_the_working_directory_never_runs_in_workers(tmp_path):
    canary = tmp_path / "planted-code-ran"
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "__init__.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    run = _generate(tmp_path, "out")
    assert run.returncode == 0, run.stderr
    assert not canary.exists()
    assert len(ZooReader(tmp_path / "out").manifest.cell_ids()) == 1


@pytest.mark.slow
def test_an_output_folder_named_zoo_in_the_working_directory(tmp_path):
    run = _generate(tmp_path, "zoo")
    assert run.returncode == 0, run.stderr
    assert "failed" not in run.stderr
    assert len(ZooReader(tmp_path / "zoo").manifest.cell_ids()) == 1
