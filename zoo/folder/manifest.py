"""manifest.json: every complete shard of a zoo, read and replaced atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooFolderError
from zoo.folder.names import FORMAT_VERSION, LAYOUTS, MANIFEST, confined, write_atomically


@dataclass(frozen=True)
class Shard:
    """One complete file of the zoo: its table, format, path relative to the root, size, hash."""

    table: str
    format: str
    path: str
    rows: int
    bytes: int
    sha256: str
    cell_id: str


@dataclass(frozen=True)
class Manifest:
    """Every complete shard of a zoo; written last and atomically, so it never lists a partial."""

    spec_hash: str
    shards: tuple[Shard, ...]
    layouts: dict[str, str]  # layout key -> sha256 of layouts/<key>.json
    stacked: dict[str, bool] = field(default_factory=dict)  # cell_id -> trained as a population
    format_version: int = FORMAT_VERSION

    def cell_ids(self) -> set[str]:
        """Cells whose cells-table row is committed (their models and pairs are, too)."""
        return {s.cell_id for s in self.shards if s.table == "cells"}

    def shards_of(self, table: str, format: str = "parquet") -> list[Shard]:
        """The shards of `table` in `format`, in manifest order."""
        return [s for s in self.shards if s.table == table and s.format == format]


def read_manifest(root: Path) -> Manifest | None:
    """The zoo's manifest, or None when the folder has none yet."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_text())
        if body.get("format_version") != FORMAT_VERSION:
            raise ZooFolderError(f"{path}: format version {body.get('format_version')!r} "
                                 f"is not supported (expected {FORMAT_VERSION})")
        shards = tuple(Shard(**raw) for raw in body["shards"])
        manifest = Manifest(body["spec_hash"], shards, dict(body["layouts"]),
                            {k: bool(v) for k, v in body["stacked"].items()})
    except (ValueError, KeyError, TypeError) as error:
        raise ZooFolderError(f"{path}: malformed manifest ({error})") from None
    for shard in manifest.shards:
        confined(Path(root), shard.path)
    for key in manifest.layouts:
        confined(Path(root), f"{LAYOUTS}/{key}.json")
    return manifest


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically."""
    body: dict[str, Any] = {"format_version": manifest.format_version,
                            "spec_hash": manifest.spec_hash,
                            "layouts": dict(sorted(manifest.layouts.items())),
                            "stacked": dict(sorted(manifest.stacked.items())),
                            "shards": [asdict(s) for s in manifest.shards]}
    write_atomically(Path(root) / MANIFEST, json.dumps(body, indent=1, sort_keys=True).encode())
