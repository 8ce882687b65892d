"""manifest.json: every complete shard of a zoo, read and replaced atomically."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from zoo.errors import ZooFolderError
from zoo.folder.names import (FORMAT_VERSION, LAYOUTS_TABLE, MANIFEST, README, READABLE_VERSIONS,
                              TABLE_FOLDERS, ZOO_JSON, inside, read_json, write_atomically)

# the files besides shards and layouts that the manifest covers
DOCUMENTS = (ZOO_JSON, README, LAYOUTS_TABLE)
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # layout keys and cell ids
SHA256 = re.compile(r"[0-9a-f]{64}")
ABSENT = "absent"  # `previous`: the document did not exist before the commit
PART = re.compile(r"(blake3:)?[0-9a-f]{64}")  # a row-group digest (zoo.folder.rowgroups)
SHARD_FORMATS = ("parquet", "hdf5", "checkpoints")  # checkpoints: a per-model HDF5 file
SHARD_TYPES = {"table": str, "format": str, "path": str, "rows": int, "bytes": int,
               "sha256": str, "cell_id": str}


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
    parts: tuple[str, ...] = ()  # models Parquet: digests of footer, row groups (rowgroups.py)


@dataclass(frozen=True)
class Manifest:
    """Every complete shard of a zoo; written last and atomically, so it never lists a partial."""

    spec_hash: str
    shards: tuple[Shard, ...]
    layouts: dict[str, str]  # layout key -> sha256 of layouts/<key>.json
    stacked: dict[str, bool] = field(default_factory=dict)  # cell_id -> trained as a population
    documents: dict[str, str] = field(default_factory=dict)  # zoo.json, README.md -> sha256
    format_version: int = FORMAT_VERSION
    # A commit in progress (zoo.folder.commits): the documents it replaces, name -> the sha256
    # of the copy the folder may still hold (ABSENT: none yet), and the shards it dropped that
    # the card on disk may still name (their files stay until the card is rewritten). Both
    # are empty, and not written, between commits.
    previous: dict[str, str] = field(default_factory=dict)
    retired: tuple[Shard, ...] = ()

    def cell_ids(self) -> set[str]:
        """Cells whose cells-table row is committed (their models and pairs are, too)."""
        return {s.cell_id for s in self.shards if s.table == "cells"}

    def shards_of(self, table: str, format: str = "parquet") -> list[Shard]:
        """The shards of `table` in `format`, in manifest order."""
        return [s for s in self.shards if s.table == table and s.format == format]


def read_manifest(root: Path) -> Manifest | None:
    """The zoo's manifest, or None when the folder has none yet; every field is checked, and
    every path it names is confined to the folder (ZooFolderError naming manifest.json)."""
    path = Path(root) / MANIFEST
    if not path.exists() and not path.is_symlink():
        return None
    return parse_manifest(read_json(path, "manifest"), path)


def parse_manifest(body: Any, path: Path | str) -> Manifest:
    """The manifest in the decoded JSON `body`, every field checked (ZooFolderError naming
    `path`, where it was read from)."""
    try:
        if not isinstance(body, dict):
            raise ValueError(f"expected a mapping, found {type(body).__name__}")
        if body.get("format_version") not in READABLE_VERSIONS:
            raise ZooFolderError(f"{path}: format version {body.get('format_version')!r} "
                                 f"is not supported (expected one of {READABLE_VERSIONS})")
        if not isinstance(body.get("spec_hash"), str) or not isinstance(body.get("shards"), list):
            raise ValueError("spec_hash or shards is missing or of the wrong type")
        manifest = Manifest(body["spec_hash"], tuple(_shard(raw) for raw in body["shards"]),
                            _hashes(body.get("layouts"), "layouts", KEY),
                            {k: bool(v) for k, v in _mapping(body.get("stacked"), "stacked")},
                            _hashes(body.get("documents"), "documents", None),
                            body["format_version"], _previous(body.get("previous", {})),
                            tuple(_shard(raw) for raw in _list(body.get("retired", []),
                                                               "retired")))
    except (ValueError, KeyError, TypeError) as error:
        raise ZooFolderError(f"{path}: malformed manifest ({error})") from None
    unknown = set(manifest.documents) - set(DOCUMENTS)
    if unknown or ZOO_JSON not in manifest.documents:
        raise ZooFolderError(f"{path}: malformed manifest (documents must cover {ZOO_JSON} and "
                             f"may cover {README} and {LAYOUTS_TABLE}; found "
                             f"{sorted(manifest.documents)})")
    listed: set[str] = set()
    for shard in manifest.shards + manifest.retired:  # links are refused when a file is opened
        inside(Path(str(path)).parent, shard.path)
        if shard.path in listed:  # read once per listing, a repeated shard multiplies work
            raise ZooFolderError(f"{path}: malformed manifest (shard {shard.path!r} is listed "
                                 f"more than once)")
        listed.add(shard.path)
    return manifest


def _shard(raw: Any) -> Shard:
    """One manifest entry, every field of its type (ValueError naming the field)."""
    if not isinstance(raw, dict) or not set(SHARD_TYPES) <= set(raw) <= {f.name for f in
                                                                         fields(Shard)}:
        raise ValueError(f"a shard entry must have exactly the fields {sorted(SHARD_TYPES)} "
                         f"(and parts)")
    parts = raw.get("parts", [])
    if not isinstance(parts, list) or not all(isinstance(p, str) and PART.fullmatch(p)
                                              for p in parts):
        raise ValueError(f"shard {raw.get('path')!r}: parts must be a list of digests "
                         f"(sha256 or blake3:<hex>)")
    for name, kind in SHARD_TYPES.items():
        if not isinstance(raw[name], kind) or isinstance(raw[name], bool):
            raise ValueError(f"shard field {name} is {raw[name]!r}; expected {kind.__name__}")
    if raw["table"] not in TABLE_FOLDERS or raw["format"] not in SHARD_FORMATS:
        raise ValueError(f"shard {raw['path']!r}: table {raw['table']!r} or format "
                         f"{raw['format']!r} is not one this version writes")
    if raw["rows"] < 0 or raw["bytes"] < 0 or not SHA256.fullmatch(raw["sha256"]) \
            or not KEY.fullmatch(raw["cell_id"]):
        raise ValueError(f"shard {raw['path']!r}: rows, bytes, sha256 or cell_id is malformed")
    return Shard(**{**raw, "parts": tuple(parts)})


def _previous(value: Any) -> dict[str, str]:
    """`previous`: document names mapped to a sha256 or ABSENT."""
    out = {}
    for key, digest in _mapping(value, "previous"):
        if key not in DOCUMENTS or not isinstance(digest, str) or not (
                digest == ABSENT or SHA256.fullmatch(digest)):
            raise ValueError(f"previous: entry {key!r} is malformed")
        out[key] = digest
    return out


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{name} is not a list")
    return value


def _mapping(value: Any, name: str) -> list[tuple[str, Any]]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} is missing or not a mapping")
    return list(value.items())


def _hashes(value: Any, name: str, keys: re.Pattern | None) -> dict[str, str]:
    """A mapping of names to sha256 hex digests."""
    out = {}
    for key, digest in _mapping(value, name):
        if (keys is not None and not keys.fullmatch(key)) or not isinstance(digest, str) \
                or not SHA256.fullmatch(digest):
            raise ValueError(f"{name}: entry {key!r} is malformed")
        out[key] = digest
    return out


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically."""
    body: dict[str, Any] = {"format_version": manifest.format_version,
                            "spec_hash": manifest.spec_hash,
                            "layouts": dict(sorted(manifest.layouts.items())),
                            "stacked": dict(sorted(manifest.stacked.items())),
                            "documents": dict(sorted(manifest.documents.items())),
                            "shards": [_entry(s) for s in manifest.shards]}
    if manifest.previous:  # only while a commit is in progress: other manifests stay as they were
        body["previous"] = dict(sorted(manifest.previous.items()))
    if manifest.retired:
        body["retired"] = [_entry(s) for s in manifest.retired]
    write_atomically(Path(root) / MANIFEST, json.dumps(body, indent=1, sort_keys=True).encode())


def _entry(shard: Shard) -> dict[str, Any]:
    """A shard's manifest entry (parts only where the shard has them)."""
    entry = asdict(shard)
    if not shard.parts:
        del entry["parts"]
    return entry
