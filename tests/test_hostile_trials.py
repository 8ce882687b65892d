"""Hostile Ray Tune trial folders for `zoo import-ray-tune`: links out of the source, FIFOs,
odd config and result values. Each is refused in one line naming the file (exit code 2, no
traceback), nothing outside the source is opened, no read waits on a FIFO."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import pytest

from generators.cli import main
from tests.test_hostile_folders import no_hang, watching
from tests.test_interop import resnet_state, write_trial

__all__ = ["no_hang"]  # a fixture, used by name


@pytest.fixture(scope="module")
def state() -> dict:
    return resnet_state(0)


@pytest.fixture
def source(tmp_path: Path, state: dict) -> Path:
    """Two published-style trial folders under tmp_path/src, and tmp_path/outside/canary."""
    for seed in (0, 1):
        write_trial(tmp_path / "src" / f"trial_{seed}", seed, state)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_text("Xnever read me")
    return tmp_path / "src"


def trial(source: Path) -> Path:
    return source / "trial_0"


def link_params(source: Path) -> Path:
    path = trial(source) / "params.json"
    outside = source.parent / "outside" / "params.json"
    outside.write_text(path.read_text())
    path.unlink()
    path.symlink_to(outside)
    return path


def link_results(source: Path) -> Path:
    path = trial(source) / "result.json"
    path.unlink()
    path.symlink_to(source.parent / "outside" / "canary")
    return path


def link_checkpoint(source: Path) -> Path:
    path = trial(source) / "checkpoint_000001" / "checkpoints"
    path.unlink()
    path.symlink_to(source.parent / "outside" / "canary")
    return path


def link_checkpoint_folder(source: Path) -> Path:
    folder = trial(source) / "checkpoint_000001"
    target = source.parent / "outside" / "checkpoint_000001"
    folder.rename(target)
    folder.symlink_to(target)
    return folder


def link_trial_folder(source: Path) -> Path:
    """A whole trial folder linked in from outside: never descended, so not a trial."""
    target = source.parent / "outside" / "trial_9"
    trial(source).rename(target)
    (source / "trial_0").symlink_to(target)
    return source


def fifo(name: str) -> Callable[[Path], Path]:
    def tamper(source: Path) -> Path:
        path = trial(source) / name
        path.unlink()
        os.mkfifo(path)
        return path
    return tamper


def params_value(key: str, value: object) -> Callable[[Path], Path]:
    def tamper(source: Path) -> Path:
        path = trial(source) / "params.json"
        body = json.loads(path.read_text())
        body[key] = value
        path.write_text(json.dumps(body))
        return path
    return tamper


def params_text(text: str) -> Callable[[Path], Path]:
    def tamper(source: Path) -> Path:
        path = trial(source) / "params.json"
        path.write_text(text)
        return path
    return tamper


def result_line(line: object) -> Callable[[Path], Path]:
    def tamper(source: Path) -> Path:
        path = trial(source) / "result.json"
        with open(path, "a") as handle:
            handle.write(json.dumps(line) + "\n")
        return path
    return tamper


# (id, tamper returning the file the line names, the message)
CASES = [
    ("linked-params", link_params, "is a symbolic link"),
    ("linked-results", link_results, "is a symbolic link"),
    ("linked-checkpoint", link_checkpoint, "is a symbolic link"),
    ("linked-checkpoint-folder", link_checkpoint_folder,
     "is a symbolic link; trial folders are read without following links"),
    ("fifo-params", fifo("params.json"), "is a FIFO, not a regular file"),
    ("fifo-results", fifo("result.json"), "is a FIFO, not a regular file"),
    ("fifo-checkpoint", fifo("checkpoint_000000/checkpoints"), "is a FIFO, not a regular file"),
    ("width-string", params_value("model::width", "wide"),
     r"model::width is 'wide'; expected a finite number"),
    ("width-fraction", params_value("model::width", 2.5), r"model::width is 2\.5; expected an"),
    ("width-bool", params_value("model::width", True), r"model::width is True; expected a finite"),
    ("seed-list", params_value("seed", [1]), r"seed is \[1\]; expected an integer"),
    ("seed-huge-float", params_value("seed", 1e300), r"seed is 1e\+300; expected an integer"),
    ("lr-string", params_value("optim::lr", "0.1"), r"optim::lr is '0\.1'; expected a finite"),
    ("lr-null", params_value("optim::lr", None), r"optim::lr is None; expected a finite number"),
    ("batch-nested", params_value("training::batchsize", {"a": 1}),
     r"training::batchsize is \{'a': 1\}; expected"),
    ("epochs-string", params_value("training::epochs_train", "1"),
     r"training::epochs_train is '1'; expected an integer"),
    ("params-list", params_text("[1, 2]"), "expected a JSON object of config keys"),
    ("params-not-json", params_text("{width"), "not valid JSON"),
    ("params-deep", params_text("[" * 100_000 + "]" * 100_000), "not valid JSON"),
    ("params-not-utf8", lambda s: (trial(s) / "params.json").write_bytes(b"\xff{}") and
     trial(s) / "params.json", "byte 0 is not UTF-8"),
    ("result-line-string", result_line("epoch two"), r"line 3 is 'epoch two'; expected a JSON"),
    ("result-loss-string", result_line({"train_loss": "low"}),
     r"line 3: train_loss is 'low'; expected a number or null"),
    ("result-acc-list", result_line({"test_acc": [0.9]}), r"line 3: test_acc is \[0\.9\]"),
    ("result-log-bool", result_line({"log_hessian_trace": True}),
     r"line 3: log_hessian_trace is True; expected a number or null"),
]


@pytest.mark.parametrize("tamper, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_import_refuses_a_hostile_trial_folder_in_one_line(source, tmp_path, capsys, no_hang,
                                                           tamper, message):
    named = tamper(source)
    out = tmp_path / "zoo"
    with watching() as opened:
        code = main(["import-ray-tune", str(source), "--out", str(out), "--data", "digits"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(message, lines[0]) and str(named) in lines[0], lines[0]
    assert "Xnever" not in err  # nothing of the canary leaks into the message
    outside = str(tmp_path / "outside")
    assert not [p for p in opened if p.startswith(outside)]
    assert not out.exists()


def test_a_linked_trial_folder_is_not_descended(source, tmp_path, capsys):
    link_trial_folder(source)
    with watching() as opened:
        code = main(["import-ray-tune", str(source), "--out", str(tmp_path / "zoo"), "--data",
                     "digits"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "zoo" / "zoo.json").read_text())["imported_from"]["trials"] == 1
    assert not [p for p in opened if p.startswith(str(tmp_path / "outside"))]
