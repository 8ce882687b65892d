"""What a generation run has to do: the cells of a spec, and which are already committed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooFolderError
from zoo.folder import ZOO_JSON, read_manifest
from zoo.spec import ModelJob, ZooSpec


@dataclass(frozen=True)
class Plan:
    """Jobs grouped by cell, and the cells already committed in the output folder."""

    spec: ZooSpec
    cells: dict[str, tuple[ModelJob, ...]]
    done: frozenset[str]

    @property
    def missing(self) -> dict[str, tuple[ModelJob, ...]]:
        return {cid: jobs for cid, jobs in self.cells.items() if cid not in self.done}

    @property
    def num_models(self) -> int:
        return sum(len(jobs) for jobs in self.cells.values())

    def rows(self) -> int:
        """Rows of the models table: models × kept epochs."""
        kept = set(self.spec.checkpoint_epochs) | set(self.spec.metrics.epochs)
        return self.num_models * len(kept)

    def describe(self, num_params: int, formats: int) -> str:
        """A short human summary (used by --dry-run and at the start of a run)."""
        spec = self.spec
        bytes_ = self.rows() * num_params * 4 * formats
        return (f"zoo {spec.name}: {len(self.cells)} cells "
                f"({len(spec.load.values)} {spec.load.name} × "
                f"{len(spec.temperature.values)} {spec.temperature.name}) × "
                f"{len(spec.seeds)} seeds = {self.num_models} models, "
                f"{self.rows()} model rows, ~{bytes_ / 1e6:.1f} MB of weights; "
                f"{len(self.done)} cells done, {len(self.missing)} to run")


def make_plan(spec: ZooSpec, fingerprint: str, out: Path) -> Plan:
    """Group the spec's jobs by cell and find what `out` already holds.

    A folder that holds a zoo of another spec is refused.
    """
    cells: dict[str, list[ModelJob]] = {}
    for job in spec.jobs(fingerprint):
        cells.setdefault(job.cell_id, []).append(job)
    manifest = read_manifest(out) if out.exists() else None
    done: frozenset[str] = frozenset()
    if manifest is not None:
        if manifest.spec_hash != spec.spec_hash():
            raise ZooFolderError(
                f"{out}: holds a zoo of another spec (spec hash {manifest.spec_hash}, this spec "
                f"{spec.spec_hash()}); choose another --out folder")
        done = frozenset(manifest.cell_ids() & set(cells))
    elif out.exists() and any(out.iterdir()) and not (out / ZOO_JSON).exists():
        raise ZooFolderError(f"{out}: exists, is not empty and is not a zoo folder")
    return Plan(spec, {cid: tuple(jobs) for cid, jobs in cells.items()}, done)
