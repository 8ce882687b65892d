"""zoo.json and README.md under the manifest: their sha256, and README `configs:` paths that
stay among the manifest's shards (so `datasets.load_dataset` reads nothing outside)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.manifest import Manifest
from zoo.folder.names import README, ZOO_JSON, confined, read_bounded, sha256_of
from zoo.folder.zoofolder import ZooFolder

MAX_README_BYTES = 16 << 20


def document_hashes(folder: ZooFolder, names: tuple[str, ...]) -> dict[str, str]:
    """The sha256 of each document of `names` (zoo.json, README.md), regular files only."""
    return {name: sha256_of(folder.check(name)) for name in names}


def record_documents(folder: ZooFolder | Path, names: tuple[str, ...]) -> Manifest:
    """Put the sha256 of `names` (zoo.json, README.md) into the manifest and replace it."""
    folder = ZooFolder.of(folder)
    manifest = folder.manifest()
    if manifest is None:
        raise ZooFolderError(f"{folder.root}: no manifest.json to record {', '.join(names)} in")
    manifest = dataclasses.replace(manifest, documents={**manifest.documents,
                                                        **document_hashes(folder, names)})
    folder.write_manifest(manifest)
    return manifest


def check_document(root: Path, manifest: Manifest, name: str) -> Path | None:
    """The document's path when it matches the manifest's sha256; None when it is absent and
    the manifest lists none (README.md before the card is written)."""
    path = confined(root, name)
    listed = manifest.documents.get(name)
    if listed is None:
        if path.exists() or path.is_symlink():
            raise IntegrityError(f"{path}: not covered by the manifest; it was added or "
                                 f"replaced after the zoo was written (rewrite it: zoo card)")
        return None
    if sha256_of(path) != listed:
        raise IntegrityError(f"{path}: sha256 does not match the manifest; it was modified")
    return path


def check_readme(root: Path, manifest: Manifest) -> None:
    """Refuse a README.md that the manifest does not cover, or whose `configs:` name a file
    that is not one of the manifest's shards (an outside path, a glob, a symlink)."""
    path = check_document(root, manifest, README)
    if path is None:
        return
    shards = {s.path for s in manifest.shards}
    for config, file in readme_files(path):
        if file not in shards:
            raise ZooFolderError(f"{path}: config {config!r} names {file!r}, which is not a "
                                 f"shard of the manifest (configs must stay inside the folder)")


def readme_files(path: Path) -> list[tuple[str, str]]:
    """(config name, data file) for every data file named in README.md's YAML front matter."""
    import yaml

    data = read_bounded(path, "dataset card", MAX_README_BYTES)
    try:
        text = data.decode("utf-8")
        if not text.startswith("---\n"):
            return []
        body = yaml.safe_load(text[4:text.index("\n---", 3)])
        return [(str(config.get("config_name")), file) for config in body.get("configs", [])
                for file in _files(config.get("data_files", []))]
    except (ValueError, yaml.YAMLError, AttributeError, TypeError, RecursionError) as error:
        raise ZooFolderError(f"{path}: front matter is not a dataset card this version "
                             f"reads ({type(error).__name__}: {error})") from None


def _files(data_files: Any) -> list[Any]:
    """Every path of a `data_files` entry (a string, a list, or a list of split mappings)."""
    if isinstance(data_files, (str, dict)):
        data_files = [data_files]
    out: list[Any] = []
    for item in data_files:
        paths = item.get("path", []) if isinstance(item, dict) else item
        out += paths if isinstance(paths, list) else [paths]
    return out


def check_record_hash(root: Path, manifest: Manifest, spec_hash: str) -> None:
    """zoo.json's spec hash must be the manifest's (one spec made every listed shard)."""
    if spec_hash != manifest.spec_hash:
        raise IntegrityError(f"{Path(root) / ZOO_JSON}: spec hash {spec_hash} differs from "
                             f"the manifest's {manifest.spec_hash}")
