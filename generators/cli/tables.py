"""The per-cell summary table that `zoo generate` and `zoo info` print."""

from __future__ import annotations

from pathlib import Path

from zoo.printable import printable

PHASE_UNSURE = ("?: label not confident (a curve fit did not converge, a deciding mean lies "
                "within one standard deviation of its threshold, or fewer than 2 seed pairs)")
PHASE_NONE = "-: no label (a metric the label needs is off or failed)"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return printable(value)


def summary_table(root: str | Path) -> str:
    """One line per cell: axes, models, mean test accuracy and train loss, phase ('?': not
    confident, '-': no label)."""
    from generators.relabel import phase_text
    from zoo.folder.reader import ZooReader

    reader = ZooReader(root)
    cells = reader.table("cells").to_pylist()
    if not cells:
        return "(no cells committed yet)"
    load, temperature = cells[0]["load_axis"], cells[0]["temperature_axis"]
    header = (load, temperature, "models", "test_acc", "test_err", "train_loss", "mc_train_err",
              "cka", "phase")
    lines = [tuple(printable(v) for v in header)]
    for row in sorted(cells, key=lambda r: (r["load_value"], r["temperature_value"])):
        lines.append((_fmt(row["load_value"]), _fmt(row["temperature_value"]),
                      _fmt(row["num_models"]), _fmt(row["test_accuracy_mean"]),
                      _fmt(row["test_error_mean"]), _fmt(row["train_loss_mean"]),
                      _fmt(row["mc_train_error_mean"]), _fmt(row["cka_mean"]),
                      printable(phase_text(row))))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    table = "\n".join("  ".join(str(v).rjust(w) for v, w in zip(line, widths)) for line in lines)
    marks = {line[-1][-1] for line in lines[1:]}
    legend = [text for mark, text in (("?", PHASE_UNSURE), ("-", PHASE_NONE)) if mark in marks]
    return "\n".join([table, *legend])
