"""The five examples run as their users run them: a script, a zoo folder, offline."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXPECTED = {  # a line each script prints when it has done its job
    "sane_tokens.py": "epoch 1: reconstruction loss",
    "nfn_layers.py": "train MSE after",
    "dwsnets_layout.py": "(4, 40, 8, 1)",
    "accuracy_predictor.py": "test R^2",
    "hf_averaging.py": "averaged 2 seeds",
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_on_the_tiny_zoo(tiny_zoo, tmp_path, script):
    root = str(EXAMPLES.parent)
    env = {**os.environ, "PYTHONPATH": root, "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, str(EXAMPLES / script), str(tiny_zoo)],
                         capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    assert EXPECTED[script] in out.stdout
    assert "rows of" in out.stdout or script == "hf_averaging.py"  # the dataset's repr
