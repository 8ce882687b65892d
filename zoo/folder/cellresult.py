"""A cell's result as the writer commits it: its tables' rows, layouts and worker-written shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.folder.manifest import Shard
from zoo.layout import Layout


@dataclass
class CellResult:
    """Rows for the models, pairs and cells tables, and the layouts the model rows refer to."""

    cell_id: str
    models: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)
    layouts: dict[str, Layout] = field(default_factory=dict)
    stacked: bool = False  # its seeds trained as one population (a grown zoo trains it alike)
    files: list[Shard] = field(default_factory=list)  # models shards its worker wrote
    notes: list[str] = field(default_factory=list)  # lines for the user (a state discarded)
