"""layouts/<key>.json: one file per architecture and width, checked against the manifest."""

from __future__ import annotations

from pathlib import Path

from zoo.errors import IntegrityError
from zoo.folder.names import LAYOUTS, confined, sha256_of, write_atomically
from zoo.layout import Layout


def write_layout(root: Path, layout: Layout) -> str:
    """Write layouts/<key>.json atomically; returns its sha256 for the manifest."""
    path = Path(root) / LAYOUTS / f"{layout.key}.json"
    write_atomically(path, layout.to_json().encode())
    return sha256_of(path)


def read_layout(root: Path, key: str, sha256: str) -> Layout:
    """The layout `key`, refused when its file does not match `sha256`."""
    path = confined(Path(root), f"{LAYOUTS}/{key}.json")
    if sha256_of(path) != sha256:
        raise IntegrityError(f"{path}: sha256 does not match the manifest")
    return Layout.from_json(path.read_text())
