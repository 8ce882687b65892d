"""Phase diagrams: heatmaps of a zoo's cells table over (load, temperature), written as PNGs.

x is the load-like axis, y the temperature-like axis, one column or row per grid value, so
log-spaced grids are evenly spaced and every tick is a real grid value.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from zoo.errors import ZooFolderError
from zoo.limits import short_repr
from zoo.phases import PHASES

PHASE_COLOURS = {"I": "#d7301f", "II": "#fc8d59", "III": "#8856a7", "IV-A": "#74add1",
                 "IV-B": "#1a9850"}
NO_DATA = "#d9d9d9"  # grey under the hatching of cells without a value
AXIS_NAMES = {"width": "width", "model_dim": "model dimension", "data_fraction": "data fraction",
              "beta": "β (convection speed)", "batch_size": "batch size",
              "learning_rate": "learning rate", "weight_decay": "weight decay"}
ANNOTATE_CELLS = 144  # write each cell's value on grids up to 12 × 12


@dataclass(frozen=True)
class Quantity:
    """One heatmap: a cells-table column, how to show it, and its colour-bar unit."""

    name: str  # file stem
    column: str
    title: str
    unit: str
    transform: str = "identity"  # "identity", "percent" (× 100) or "log" (natural log)
    cmap: str = "viridis"
    diverging: bool = False  # centred on 0 (mode connectivity)
    log_colours: bool = False  # logarithmic colour scale (losses span decades)
    limits: tuple[float, float] | None = None


QUANTITIES = (
    Quantity("test_accuracy", "test_accuracy_mean", "Test accuracy", "accuracy (%)", "percent"),
    Quantity("train_loss", "train_loss_mean", "Train loss", "mean train loss (nats)",
             cmap="magma_r", log_colours=True),
    Quantity("log_hessian_trace", "hessian_trace_train_mean", "log Hessian trace (train)",
             "ln(trace of the loss Hessian)", "log", "plasma"),
    Quantity("log_hessian_top_eigenvalue", "hessian_top_eigenvalue_train_mean",
             "log top Hessian eigenvalue (train)", "ln(largest eigenvalue)", "log", "plasma"),
    Quantity("cka", "cka_mean", "CKA of test logits", "linear CKA (0-1)", cmap="cividis",
             limits=(0.0, 1.0)),
    Quantity("mc_train_error", "mc_train_error_mean", "Mode connectivity mc (train error)",
             "mc (train error, points); < 0: barrier", cmap="RdBu", diverging=True),
)


@dataclass(frozen=True)
class CellGrid:
    """A matrix over the grid: values[i, j] belongs to temperature_values[i], load_values[j]."""

    load_axis: str
    load_values: tuple[float, ...]
    temperature_axis: str
    temperature_values: tuple[float, ...]
    values: np.ndarray  # (len(temperature_values), len(load_values)); NaN: no value


def _transformed(value: Any, transform: str) -> float:
    if value is None or not math.isfinite(value):
        return math.nan
    if transform == "percent":
        return 100.0 * value
    if transform == "log":
        return math.log(value) if value > 0 else math.nan
    return float(value)


def cell_matrix(cells: Sequence[dict[str, Any]], column: str, transform: str = "identity",
                axes: dict[str, Sequence[float]] | None = None) -> CellGrid:
    """The matrix of `column` over the grid; cells without a (finite) value are NaN.

    Args:
        cells: cells-table rows (dicts).
        column: a numeric cells column, or "phase" (values: index into zoo.phases.PHASES).
        transform: "identity", "percent" or "log".
        axes: {"load": values, "temperature": values} to include grid values without cells.
    """
    if not cells:
        raise ValueError("cell_matrix: the cells table is empty; nothing to plot")
    loads = sorted({float(c["load_value"]) for c in cells} | set((axes or {}).get("load", ())))
    temps = sorted({float(c["temperature_value"]) for c in cells}
                   | set((axes or {}).get("temperature", ())))
    values = np.full((len(temps), len(loads)), np.nan)
    for cell in cells:
        i, j = temps.index(float(cell["temperature_value"])), loads.index(float(cell["load_value"]))
        if column == "phase":
            values[i, j] = PHASES.index(cell["phase"]) if cell["phase"] in PHASES else np.nan
        else:
            values[i, j] = _transformed(cell[column], transform)
    return CellGrid(cells[0]["load_axis"], tuple(loads), cells[0]["temperature_axis"],
                    tuple(temps), values)


def phase_matrix(cells: Sequence[dict[str, Any]],
                 axes: dict[str, Sequence[float]] | None = None) -> CellGrid:
    """The phase map: values are indices into zoo.phases.PHASES, NaN for unlabelled cells."""
    return cell_matrix(cells, "phase", axes=axes)


def tick_label(value: float) -> str:
    """A grid value as written in a spec: 8, 0.05, 1e-05."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e6 else f"{value:g}"


def _frame(ax: Any, grid: CellGrid) -> None:
    """Ticks at every grid value, axis names, hatching over cells without a value."""
    from matplotlib.patches import Rectangle

    ax.set_xticks(range(len(grid.load_values)), [tick_label(v) for v in grid.load_values],
                  rotation=45 if len(grid.load_values) > 6 else 0)
    ax.set_yticks(range(len(grid.temperature_values)),
                  [tick_label(v) for v in grid.temperature_values])
    ax.set_xlabel(f"{AXIS_NAMES.get(grid.load_axis, grid.load_axis)} (load)")
    ax.set_ylabel(f"{AXIS_NAMES.get(grid.temperature_axis, grid.temperature_axis)} "
                  f"(temperature)")
    for i, j in zip(*np.nonzero(np.isnan(grid.values))):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=NO_DATA, hatch="///",
                               edgecolor="#8c8c8c", linewidth=0))
    ax.set_xticks(np.arange(len(grid.load_values) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(grid.temperature_values) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlim(-0.5, len(grid.load_values) - 0.5)
    ax.set_ylim(-0.5, len(grid.temperature_values) - 0.5)


def _norm(quantity: Quantity, values: np.ndarray) -> Any:
    from matplotlib.colors import LogNorm, Normalize, TwoSlopeNorm

    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if quantity.limits is not None:
        return Normalize(*quantity.limits)
    if quantity.diverging:
        bound = max(abs(low), abs(high), 1e-12)
        return TwoSlopeNorm(0.0, -bound, bound)
    if quantity.log_colours and finite.size and low > 0 and high > 10 * low:
        return LogNorm(low, high)
    return Normalize(low, high if high > low else low + 1.0)


def _annotate(ax: Any, grid: CellGrid, texts: np.ndarray, shades: np.ndarray) -> None:
    """Write texts[i, j] in each cell, white on dark colours (shades: luminance in 0-1)."""
    if grid.values.size > ANNOTATE_CELLS:
        return
    fontsize = 9 if grid.values.size <= 36 else 7
    for (i, j), text in np.ndenumerate(texts):
        if text:
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color="white" if shades[i, j] < 0.5 else "black")


def _luminance(rgba: np.ndarray) -> np.ndarray:
    return 0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]


def _no_value_note(ax: Any) -> None:
    """Explain the hatching under the axes."""
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor=NO_DATA, hatch="///", edgecolor="#8c8c8c",
                             label="no value: cell missing or diverged, or log of a value <= 0")],
              loc="upper left", bbox_to_anchor=(0.0, -0.16), frameon=False, fontsize=7)


def draw_quantity(ax: Any, grid: CellGrid, quantity: Quantity, note: bool = True) -> None:
    """One heatmap with its colour bar (unit on it) and cell values written in; `note`
    explains hatched cells under the axes."""
    import matplotlib

    cmap = matplotlib.colormaps[quantity.cmap].with_extremes(bad=NO_DATA)
    norm = _norm(quantity, grid.values)
    image = ax.imshow(np.ma.masked_invalid(grid.values), cmap=cmap, norm=norm, origin="lower",
                      aspect="auto")
    ax.figure.colorbar(image, ax=ax, label=quantity.unit, fraction=0.06, pad=0.03)
    _frame(ax, grid)
    spec = ".1f" if quantity.transform == "percent" else ".3g"
    texts = np.vectorize(lambda v: "" if not math.isfinite(v) else format(v, spec))(grid.values)
    shades = _luminance(cmap(norm(np.nan_to_num(grid.values))))
    _annotate(ax, grid, texts, shades)
    ax.set_title(quantity.title)
    if note and np.isnan(grid.values).any():
        _no_value_note(ax)


def draw_phases(ax: Any, grid: CellGrid, legend: bool = True) -> None:
    """The phase map: one colour per phase, its name written in each cell, a legend."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cmap = ListedColormap([PHASE_COLOURS[p] for p in PHASES]).with_extremes(bad=NO_DATA)
    ax.imshow(np.ma.masked_invalid(grid.values), cmap=cmap, vmin=-0.5,
              vmax=len(PHASES) - 0.5, origin="lower", aspect="auto")
    _frame(ax, grid)
    texts = np.vectorize(lambda v: "" if not math.isfinite(v) else PHASES[int(v)])(grid.values)
    shades = np.where(np.isin(grid.values, [0, 2, 4]), 0.0, 1.0)  # dark: I, III, IV-B
    _annotate(ax, grid, texts, shades)
    ax.set_title("Phase (Yang et al. 2021)")
    if legend:
        handles = [Patch(facecolor=PHASE_COLOURS[p], label=p) for p in PHASES]
        if np.isnan(grid.values).any():
            handles.append(Patch(facecolor=NO_DATA, hatch="///", edgecolor="#8c8c8c",
                                 label="unlabelled"))
        ax.legend(handles=handles, title="phase", loc="upper left", bbox_to_anchor=(1.02, 1),
                  borderaxespad=0, frameon=False)


def _figure(grid: CellGrid, extra_width: float = 1.8) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    width = max(5.0, 1.6 + 0.75 * len(grid.load_values) + extra_width)
    height = max(3.8, 1.6 + 0.5 * len(grid.temperature_values))
    return plt.subplots(figsize=(width, height), dpi=150, layout="constrained")


def _subtitle(spec: dict[str, Any]) -> str:
    return (f"zoo {spec['name']}: {spec['architecture']['family']} on {spec['data']['name']}, "
            f"mean over seeds at epoch {max(spec['metrics']['epochs'])}")


def save_figure(fig: Any, path: Path) -> Path:
    """Write `fig` to `path`, close it (no figure stays in memory) and return the path."""
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)
    return path


UNITS = {  # units that differ from classification's, per task
    "language_model": {"train_loss": "mean train loss (nats per token)",
                       "mc_train_error": "mc (train token error, points); < 0: barrier"},
    "pinn": {"train_loss": "mean train loss (PDE residual + boundary MSE)",
             "mc_train_error": "mc (relative L2 error); < 0: barrier"},
}


def _available(cells: Sequence[dict[str, Any]]) -> list[Quantity]:
    """The quantities with at least one finite value (PINNs have no accuracy, for example),
    with the units of the zoo's task."""
    from zoo.architectures import REGISTRY

    family = REGISTRY.get(cells[0]["architecture"])
    units = UNITS.get(family.task if family else "classification", {})
    return [replace(q, unit=units.get(q.name, q.unit)) for q in QUANTITIES
            if any(math.isfinite(_transformed(c[q.column], q.transform)) for c in cells)]


def _overview(cells: Sequence[dict[str, Any]], axes: dict[str, Sequence[float]],
              spec: dict[str, Any], path: Path) -> Path:
    """All heatmaps and the cells-per-phase counts in one figure."""
    import matplotlib.pyplot as plt

    quantities = _available(cells)
    grid = phase_matrix(cells, axes)
    columns = 4
    rows = math.ceil((len(quantities) + 2) / columns)
    panel = (max(3.2, 1.4 + 0.45 * len(grid.load_values) + 1.2),
             max(2.8, 1.4 + 0.35 * len(grid.temperature_values)))
    fig, panels = plt.subplots(rows, columns, figsize=(panel[0] * columns, panel[1] * rows),
                               dpi=120, layout="constrained", squeeze=False)
    flat = list(panels.flat)
    draw_phases(flat[0], grid, legend=False)
    for ax, quantity in zip(flat[1:], quantities):
        draw_quantity(ax, cell_matrix(cells, quantity.column, quantity.transform, axes),
                      quantity, note=False)
    _phase_counts(flat[len(quantities) + 1], cells)
    for ax in flat[len(quantities) + 2:]:
        ax.axis("off")
    fig.suptitle(f"Phase diagrams — {_subtitle(spec)}")
    return save_figure(fig, path)


def _phase_counts(ax: Any, cells: Sequence[dict[str, Any]]) -> None:
    counts = Counter(c["phase"] for c in cells)
    ax.bar(PHASES, [counts.get(p, 0) for p in PHASES],
           color=[PHASE_COLOURS[p] for p in PHASES])
    ax.set_ylabel("cells")
    ax.set_xlabel("phase")
    ax.set_title(f"Cells per phase ({len(cells)} cells)")
    ax.yaxis.get_major_locator().set_params(integer=True)


MAX_PLOT_AXIS = 64  # values of one axis drawn (the published grids: 8); a figure grows with it


def grid_axes(spec: dict[str, Any], cells: Sequence[dict[str, Any]],
              source: str) -> dict[str, list[float]]:
    """The grid values of zoo.json's spec, each a finite number, at most MAX_PLOT_AXIS per
    axis with the cells' own values (a figure is sized by them: refused before it is made)."""
    axes = {}
    for axis in ("load", "temperature"):
        values = spec[f"{axis}_axis"]["values"]
        if len(values) > MAX_PLOT_AXIS or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in values):
            raise ZooFolderError(f"{source}: {axis} axis values {short_repr(values)} are not "
                                 f"at most {MAX_PLOT_AXIS} finite numbers; zoo plot draws none")
        drawn = {float(v) for v in values} | {float(c[f"{axis}_value"]) for c in cells}
        if len(drawn) > MAX_PLOT_AXIS:
            raise ZooFolderError(f"{source}: its cells hold {len(drawn)} {axis} values; zoo "
                                 f"plot draws at most {MAX_PLOT_AXIS} per axis")
        axes[axis] = [float(v) for v in values]
    return axes


def plot_zoo(root: str | Path, out: str | Path | None = None) -> list[Path | str]:
    """Write one PNG per quantity, the phase map and an overview of a zoo's cells table.

    Args:
        root: the zoo folder, or its URI (s3://bucket/prefix: read through the local cache).
        out: folder or URI for the PNGs (default: the zoo's plots/, on the store for a URI);
            created when missing.
    Returns:
        the written files (local paths, or URIs on a store): phases.png, one per quantity
        with data, overview.png.
    """
    import matplotlib

    matplotlib.use("Agg")
    from zoo.folder.names import PLOTS
    from zoo.folder.outputs import Outputs
    from zoo.folder.reader import ZooReader

    reader = ZooReader(root)
    cells = reader.table("cells").to_pylist()
    spec = reader.record.spec
    axes = grid_axes(spec, cells, f"{str(root).rstrip('/')}/zoo.json")
    outputs = Outputs(root, out, PLOTS)
    folder = outputs.folder
    grid = phase_matrix(cells, axes)
    fig, ax = _figure(grid)
    draw_phases(ax, grid)
    fig.suptitle(_subtitle(spec), fontsize=9)
    paths = [save_figure(fig, folder / "phases.png")]
    for quantity in _available(cells):
        grid = cell_matrix(cells, quantity.column, quantity.transform, axes)
        fig, ax = _figure(grid)
        draw_quantity(ax, grid, quantity)
        fig.suptitle(_subtitle(spec), fontsize=9)
        paths.append(save_figure(fig, folder / f"{quantity.name}.png"))
    paths.append(_overview(cells, axes, spec, folder / "overview.png"))
    return outputs.publish(paths)
