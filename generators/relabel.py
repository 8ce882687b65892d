"""Relabel a zoo's cells from their stored numbers with other thresholds; no training."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from zoo.folder.reader import ZooReader
from zoo.phases import phase_columns, thresholds_for
from zoo.spec import short_hash


@dataclass(frozen=True)
class Relabelling:
    """Cells rows before and after, the thresholds applied and the shards written."""

    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    thresholds: dict[str, float]
    written: list[Path]

    def moved(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(before, after) rows whose phase or confidence changed."""
        return [(b, a) for b, a in zip(self.before, self.after)
                if (b.get("phase"), b.get("phase_confident"))
                != (a["phase"], a["phase_confident"])]


def relabel(root: str | Path, overrides: Mapping[str, float] | None = None, *,
            dry_run: bool = False) -> Relabelling:
    """Recompute every cell's phase of the zoo in `root` with other thresholds.

    The thresholds are the task's defaults for the zoo's data set (scaled by ln C), then the
    zoo spec's `phases`, then `overrides` (high_loss, mc, cka). Unless `dry_run`, the new
    cells rows are committed as new shards through the manifest (the old ones are dropped),
    so are the models shards with the cell columns they repeat (CELL_JOINED), and the dataset
    card is rewritten.
    """
    from zoo.folder.card import write_card
    from zoo.folder.lock import FolderLock
    from zoo.folder.writer import ZooWriter
    from zoo.folder.zoofolder import ZooFolder

    reader = ZooReader(root)
    spec, info = reader.record.spec, reader.record.data_info
    merged = {**spec.get("phases", {}), **(overrides or {})}
    thresholds = thresholds_for(info.task, info.num_outputs, merged).to_dict()
    before = sorted(reader.table("cells").to_pylist(),
                    key=lambda r: (r["load_value"], r["temperature_value"]))
    after = [{**row, **phase_columns(row, info.task, info.num_outputs, merged)}
             for row in before]
    written: list[Path] = []
    if not dry_run and after:
        tag = "relabel-" + short_hash({"thresholds": thresholds,
                                       "replaces": [s.sha256 for s in
                                                    reader.manifest.shards_of("cells")]}, 8)
        folder = ZooFolder(root)
        with FolderLock(folder, on_stale=lambda line: print(line, file=sys.stderr)):
            writer = ZooWriter(folder, reader.manifest.spec_hash)
            writer.remove_leftovers()  # a killed relabel's shards (the lock: no run's own)
            written = writer.replace_rows("cells", after, tag)
            written += writer.replace_tables("models", _joined_models(reader, after), tag)
            write_card(folder)
    return Relabelling(before, after, thresholds, written)


def _joined_models(reader: ZooReader, cells: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Each cell's models Parquet tables (one a shard, in row order) with their repeated cell
    columns set from `cells`."""
    import pyarrow as pa

    from zoo.folder.schema import CELL_JOINED, arrow_schema

    schema, tables = arrow_schema("models"), {}
    by_cell = {row["cell_id"]: row for row in cells}
    for shard in reader.manifest.shards_of("models"):
        table = reader.parquet(shard, schema=schema)  # checks its sha256, footer, weights
        for name in CELL_JOINED:
            column = pa.array([by_cell[shard.cell_id].get(name)] * table.num_rows,
                              type=schema.field(name).type)
            table = table.set_column(table.schema.get_field_index(name), name, column)
        tables.setdefault(shard.cell_id, []).append(table)
    return tables


def relabel_table(result: Relabelling) -> str:
    """One line per cell: axes, the deciding means, old and new phase and confidence."""
    if not result.before:
        return "(no cells committed yet)"
    first = result.before[0]
    header = (first["load_axis"], first["temperature_axis"], "train_loss", "mc_train_err",
              "cka", "before", "after")
    lines = [header]
    for b, a in zip(result.before, result.after):
        lines.append((_fmt(b["load_value"]), _fmt(b["temperature_value"]),
                      _fmt(b.get("train_loss_mean")), _fmt(b.get("mc_train_error_mean")),
                      _fmt(b.get("cka_mean")), phase_text(b), phase_text(a)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in lines)


def phase_text(row: Mapping[str, Any]) -> str:
    """'IV-B', 'IV-B?' (not confident) or '-' (no label)."""
    if row.get("phase") is None:
        return "-"
    return row["phase"] + ("" if row.get("phase_confident") else "?")


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
