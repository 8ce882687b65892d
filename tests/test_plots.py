"""Phase diagrams: the plotted matrices equal the cells table, and the PNGs are real images."""

import math
import shutil
import struct

import numpy as np
import pytest

from analysis.plots import QUANTITIES, cell_matrix, phase_matrix, plot_zoo, tick_label
from generators.cli import main
from zoo.folder.reader import ZooReader
from zoo.phases import PHASES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = {"phases.png", "test_accuracy.png", "train_loss.png", "log_hessian_trace.png",
         "log_hessian_top_eigenvalue.png", "cka.png", "mc_train_error.png", "overview.png"}


def png_size(path):
    """(width, height) from the IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def cell(load, temperature, **values):
    return {"load_axis": "width", "load_value": load, "temperature_axis": "learning_rate",
            "temperature_value": temperature, "phase": None, **values}


def test_phase_matrix_matches_the_cells_table(tiny_zoo):
    cells = ZooReader(tiny_zoo).table("cells").to_pylist()
    grid = phase_matrix(cells)
    assert (grid.load_axis, grid.temperature_axis) == ("width", "batch_size")
    assert grid.load_values == (4.0, 8.0) and grid.temperature_values == (128.0, 512.0)
    assert grid.values.shape == (2, 2)
    for row in cells:
        i = grid.temperature_values.index(row["temperature_value"])
        j = grid.load_values.index(row["load_value"])
        assert PHASES[int(grid.values[i, j])] == row["phase"]


def test_cell_matrix_transforms_values_and_leaves_missing_cells_nan():
    cells = [cell(8, 0.1, test_accuracy_mean=0.5, hessian_trace_train_mean=math.e),
             cell(16, 0.1, test_accuracy_mean=None, hessian_trace_train_mean=-3.0),
             cell(16, 0.01, test_accuracy_mean=0.25, hessian_trace_train_mean=1.0)]
    accuracy = cell_matrix(cells, "test_accuracy_mean", "percent")
    assert accuracy.temperature_values == (0.01, 0.1) and accuracy.load_values == (8.0, 16.0)
    np.testing.assert_array_equal(accuracy.values, [[np.nan, 25.0], [50.0, np.nan]])
    trace = cell_matrix(cells, "hessian_trace_train_mean", "log",
                        axes={"load": [8, 16, 32], "temperature": [0.01, 0.1]})
    assert trace.load_values == (8.0, 16.0, 32.0)
    np.testing.assert_array_equal(trace.values, [[np.nan, 0.0, np.nan], [1.0, np.nan, np.nan]])


def test_unlabelled_cells_are_nan_in_the_phase_map():
    grid = phase_matrix([cell(8, 0.1, phase="IV-B"), cell(16, 0.1)])
    np.testing.assert_array_equal(grid.values, [[PHASES.index("IV-B"), np.nan]])


def test_cell_matrix_refuses_an_empty_table():
    with pytest.raises(ValueError, match="cells table is empty"):
        cell_matrix([], "cka_mean")


@pytest.mark.parametrize("value,text", [(8.0, "8"), (0.05, "0.05"), (1e-5, "1e-05"),
                                        (2.5, "2.5")])
def test_tick_labels_are_the_grid_values(value, text):
    assert tick_label(value) == text


def test_plot_zoo_writes_every_diagram_into_the_zoo_by_default(tiny_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    paths = plot_zoo(zoo)
    assert {p.name for p in paths} == NAMES and len(QUANTITIES) + 2 == len(paths)
    for path in paths:
        assert path.parent == zoo / "plots"
        width, height = png_size(path)
        assert width >= 600 and height >= 450 and path.stat().st_size > 20_000
    assert png_size(zoo / "plots" / "overview.png")[0] > 1500


def test_cli_plot_writes_into_out(tiny_zoo, tmp_path, capsys):
    assert main(["plot", str(tiny_zoo), "--out", str(tmp_path / "figures")]) == 0
    assert {p.name for p in (tmp_path / "figures").iterdir()} == NAMES
    assert capsys.readouterr().out.count("wrote ") == len(NAMES)
