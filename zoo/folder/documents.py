"""zoo.json, README.md and layouts.parquet under the manifest: their sha256, and README
`configs:` paths that stay among the manifest's shards and layouts.parquet (so
`datasets.load_dataset` reads nothing outside)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from zoo.errors import IntegrityError, SpecError, ZooFolderError
from zoo.folder.manifest import ABSENT, Manifest
from zoo.folder.names import LAYOUTS_TABLE, README, ZOO_JSON, confined, read_bounded, sha256_of
from zoo.folder.zoofolder import ZooFolder
from zoo.limits import check_document as check_nesting
from zoo.printable import printable

MAX_README_BYTES = 16 << 20
HF_YAML = ".huggingface.yaml"  # datasets merges this file's YAML into the card's
CONFIG_KEYS = ("config_name", "default", "data_files")  # all that `zoo card` writes


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
    """The document's path when it matches the manifest's sha256, or the sha256 of the copy a
    commit in progress replaces (`manifest.previous`); None when it is absent and the manifest
    lists none (README.md before the card is written) or a commit is writing its first."""
    path = confined(root, name)
    listed = manifest.documents.get(name)
    present = path.exists() or path.is_symlink()
    if not present and manifest.previous.get(name) == ABSENT:
        return None
    if listed is None:
        if present:
            raise IntegrityError(f"{path}: not covered by the manifest; it was added or "
                                 f"replaced after the zoo was written (rewrite it: zoo card)")
        return None
    if sha256_of(path) not in (listed, manifest.previous.get(name)):
        raise IntegrityError(f"{path}: sha256 does not match the manifest; it was modified")
    return path


def is_previous(root: Path, manifest: Manifest, name: str) -> bool:
    """Whether the folder still holds the copy of document `name` that a commit in progress
    replaces (the manifest already describes the new one)."""
    digest = manifest.previous.get(name)
    path = confined(root, name)
    return digest is not None and digest != manifest.documents.get(name) and (
        path.exists() or path.is_symlink()) and sha256_of(path) == digest


def check_readme(root: Path, manifest: Manifest) -> None:
    """Refuse a README.md that the manifest does not cover, or whose `configs:` name a file
    that is not one of the manifest's shards or its layouts.parquet (an outside path, a glob,
    a URL, a symlink), or set anything that moves where `datasets` looks (data_dir); refuse
    the standalone `.huggingface.yaml` that `datasets` merges into the card, and a
    layouts.parquet the manifest does not cover (or whose sha256 differs)."""
    extra = confined(root, HF_YAML)
    if extra.exists() or extra.is_symlink():
        raise ZooFolderError(f"{extra}: datasets merges it into the card's configs; a zoo folder "
                             f"holds none (remove it)")
    tables = {LAYOUTS_TABLE} if check_document(root, manifest, LAYOUTS_TABLE) else set()
    path = check_document(root, manifest, README)
    if path is None:
        return
    listed = {s.path for s in manifest.shards + manifest.retired} | tables  # retired: kept
    for config, file in readme_files(path):
        if file not in listed:
            raise ZooFolderError(f"{path}: config {printable(repr(config))} names "
                                 f"{printable(repr(file))}, which is not a shard of the "
                                 f"manifest nor its {LAYOUTS_TABLE} (configs must stay inside "
                                 f"the folder)")


def readme_files(path: Path) -> list[tuple[str, str]]:
    """(config name, data file) for every data file named in README.md's `configs:` (see
    `readme_configs`), in the data_files forms `datasets` accepts."""
    out = []
    for config in readme_configs(path):
        name = config.get("config_name")
        out += [(str(name), file) for file in _files(path, name, config.get("data_files"))]
    return out


def readme_configs(path: Path) -> list[dict[str, Any]]:
    """The `configs:` of README.md, the card read as Hugging Face reads it: utf-8-sig, line
    endings kept, the front matter found by huggingface_hub's own pattern and parsed by
    yaml.safe_load (as `DatasetCard` does); [] without front matter. A config setting more than
    its name, default flag and data_files (data_dir, features, builder options) is refused: a
    zoo's card never does."""
    import yaml
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    data = read_bounded(path, "dataset card", MAX_README_BYTES)
    try:
        match = REGEX_YAML_BLOCK.search(data.decode("utf-8-sig"))
        metadata = yaml.safe_load(match.group(2)) if match else None
        check_nesting(metadata, f"{path}: front matter")
    except (ValueError, yaml.YAMLError, RecursionError, SpecError) as error:
        raise ZooFolderError(f"{path}: front matter is not a dataset card this version "
                             f"reads ({type(error).__name__}: {_short(error)})") from None
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        raise ZooFolderError(f"{path}: front matter is a {type(metadata).__name__}; a dataset "
                             f"card's is a mapping")
    configs = metadata.get("configs") or []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise ZooFolderError(f"{path}: configs is not a list of mappings")
    for config in configs:
        for key in config:
            if key not in CONFIG_KEYS:
                raise ZooFolderError(f"{path}: config {printable(repr(config.get('config_name')))}"
                                     f" sets {printable(repr(key))}; a zoo's card sets only "
                                     f"{', '.join(CONFIG_KEYS)}")
    return configs


def _files(path: Path, config: Any, data_files: Any) -> list[str]:
    """Every path of a `data_files` entry in the forms `datasets` accepts: a string, a list of
    strings, or a list of {split, path} mappings whose path is a string or list of strings."""
    items = [data_files] if isinstance(data_files, str) else data_files
    if not isinstance(items, list):
        raise ZooFolderError(f"{path}: config {printable(repr(config))} has data_files of a form "
                             f"datasets does not read")
    out: list[str] = []
    for item in items:
        paths = item.get("path") if isinstance(item, dict) and len(item) == 2 and \
            "split" in item else item
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ZooFolderError(f"{path}: config {printable(repr(config))} has data_files of "
                                 f"a form datasets does not read")
        out += paths
    return out


def _short(error: Exception, length: int = 200) -> str:
    text = printable(" ".join(str(error).split()))
    return text if len(text) <= length else f"{text[:length - 3]}..."


def check_record_hash(root: Path, manifest: Manifest, spec_hash: str) -> None:
    """zoo.json's spec hash must be the manifest's (one spec made every listed shard), unless
    zoo.json is still the copy a commit in progress replaces (a growing zoo's, before)."""
    if spec_hash != manifest.spec_hash and not is_previous(root, manifest, ZOO_JSON):
        raise IntegrityError(f"{Path(root) / ZOO_JSON}: spec hash {spec_hash} differs from "
                             f"the manifest's {manifest.spec_hash}")
