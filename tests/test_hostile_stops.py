"""Stopping `zoo`: Ctrl-C and SIGTERM during a generate, and output folders the system refuses.
Each ends in one line on stderr with its exit code (130, 143, 2), no traceback; a stopped run
leaves no worker process, no lock, and a folder every reader still opens."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from generators.cli import main
from tests.conftest import write_spec
from zoo.folder.names import LOCK


def _group_empty(pgid: int, seconds: float) -> bool:
    """Whether every process of the group is gone within `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, line", [
    (signal.SIGINT, 130, "zoo: interrupted; the workers were stopped and the lock released"),
    (signal.SIGTERM, 143, "zoo: terminated (SIGTERM); the workers were stopped and the lock "
                          "released"),
], ids=["ctrl-c", "sigterm"])
def test_a_stopped_generate_says_so_in_one_line_and_leaves_nothing_running(tmp_path, signum,
                                                                            code, line):
    out = tmp_path / "zoo"
    # A shell's background job starts with SIGINT ignored and Python keeps that; a terminal's
    # Ctrl-C reaches a foreground `zoo`, so the child gets the default disposition back.
    process = subprocess.Popen(
        [sys.executable, "-m", "generators.cli", "generate", str(write_spec(tmp_path)),
         "--out", str(out), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, env={**os.environ, "HF_DATASETS_OFFLINE": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    start = time.monotonic()
    while not (out / "state").exists() and time.monotonic() - start < 120:
        time.sleep(0.2)  # state/ appears once Ray is up and cells train
    assert (out / LOCK).exists()
    time.sleep(1)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert process.returncode == code, err
    assert "Traceback" not in err and lines[-1].startswith(line), err
    assert not (out / LOCK).exists()
    assert _group_empty(process.pid, 90)  # Ray's agents take up to ~60 s (executor.py)
    if (out / "manifest.json").exists():  # what was committed before the stop still reads
        from zoo.folder.reader import ZooReader

        ZooReader(out)


@pytest.mark.parametrize("command", [
    ["generate", "{spec}", "--out", "/sys/zoo"],
    ["generate", "{spec}", "--out", "/proc/no-such/zoo"],
    ["plot", "{zoo}", "--out", "/sys/plots"],
    ["export-ray-tune", "{zoo}", "--out", "/sys/trials"],
], ids=["generate-sysfs", "generate-missing-parent", "plot", "export"])
def test_an_output_folder_the_system_refuses_is_one_line(tmp_path, tiny_zoo, capsys, command):
    spec = write_spec(tmp_path)
    argv = [a.format(spec=spec, zoo=tiny_zoo) for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"zoo: error: /(sys|proc)/\S*: (Operation not "
                                      r"permitted|No such file or directory)$", err[0]), err
