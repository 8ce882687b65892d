"""Downstream studies of a zoo, each a Parquet table plus a figure broken down by phase.

`run_study("averaging" | "finetune" | "prune", root, out, **options)`; see each module for
what it measures. Options: averaging(last=5), finetune(epochs=2), prune(densities=(1, .5, .2,
.1)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.studies import averaging, finetune, prune
from analysis.studies.common import StudyZoo, score_name, write_table
from zoo.errors import ZooError

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Study:
    """A study: rows from an opened zoo, and a figure of those rows."""

    measure: Callable[..., Rows]
    figure: Callable[[Rows, str, Path], Path]


STUDIES: dict[str, Study] = {
    "averaging": Study(averaging.measure, averaging.figure),
    "finetune": Study(finetune.measure, finetune.figure),
    "prune": Study(prune.measure, prune.figure),
}


def run_study(name: str, root: str | Path, out: str | Path | None = None, *,
              show_progress: bool = True, **options: Any) -> list[Path | str]:
    """Run study `name` on the zoo in `root`; write out/<name>.parquet and out/<name>.png.

    Args:
        root: the zoo folder, or its URI (s3://bucket/prefix: read through the local cache).
        out: output folder or URI (default: the zoo's studies/<name>, on the store for a URI),
            created when missing.
        options: the study's own options (averaging: last; finetune: epochs; prune: densities).
    Returns:
        the table and the figure (local paths, or URIs on a store).
    """
    from zoo.folder.names import STUDIES as STUDIES_FOLDER
    from zoo.folder.outputs import Outputs

    if name not in STUDIES:
        raise ZooError(f"study: {name!r} is not a study; expected one of {', '.join(STUDIES)}")
    study = STUDIES[name]
    zoo = StudyZoo(root)
    outputs = Outputs(root, out, f"{STUDIES_FOLDER}/{name}")
    folder = outputs.folder
    rows = study.measure(zoo, show_progress=show_progress, **options)
    table = write_table(rows, folder / f"{name}.parquet")
    return outputs.publish([table, study.figure(rows, score_name(zoo.task),
                                                folder / f"{name}.png")])
