"""Copy a zoo between two locations (local folders, object-store prefixes), verified and
resumable, objects first and the manifest last.

A reader of the destination sees its old manifest (and the objects it lists, untouched: shards
have names no other version uses) until the single write of the new manifest, so a copy killed
at any point leaves the destination readable as before; rerunning it skips every object already
there with the manifest's sha256.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.location import is_uri, objects_of, open_location, scratch_name
from zoo.folder.manifest import Manifest, parse_manifest
from zoo.folder.names import MANIFEST, sha256_of


@dataclass(frozen=True)
class SyncReport:
    """What a copy did: objects copied and skipped (already there), bytes copied."""

    copied: int
    skipped: int
    bytes: int


def read_manifest_at(location: Any) -> tuple[Manifest, bytes]:
    """The manifest of the zoo at `location` (an opened location) and its exact bytes."""
    data = location.read_bytes(MANIFEST, "manifest")
    if data is None:
        raise ZooFolderError(f"{location.name(MANIFEST)}: missing; not a zoo (or generation "
                             f"has not committed anything yet)")
    try:
        body = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise ZooFolderError(f"{location.name(MANIFEST)}: not a manifest this version can read "
                             f"({error})") from None
    return parse_manifest(body, location.name(MANIFEST)), data


def sync(source: str | Path, target: str | Path,
         on_object: Callable[[str, bool], None] | None = None) -> SyncReport:
    """Copy the zoo at `source` to `target`: every object its manifest covers, each checked
    against the manifest's sha256 before it is stored, then the manifest (one write).
    `on_object(name, copied)` is called after each object."""
    src, dst = open_location(source), open_location(target)
    if _same(source, target):
        raise ZooFolderError(f"{target}: is the source itself")
    manifest, manifest_bytes = read_manifest_at(src)
    present = dst.listing()
    copied = skipped = size = 0
    with tempfile.TemporaryDirectory(prefix="zoo-sync-") as scratch:
        for relative, digest in objects_of(manifest):
            if relative in present and dst.sha256(relative) == digest:
                skipped += 1
            else:
                size += _copy(src, dst, relative, digest, Path(scratch))
                copied += 1
            if on_object is not None:
                on_object(relative, relative not in present)
    dst.write_bytes(MANIFEST, manifest_bytes)
    return SyncReport(copied, skipped, size)


def _copy(src: Any, dst: Any, relative: str, digest: str, scratch: Path) -> int:
    """Stage one object in `scratch`, check its sha256, store it; returns its bytes."""
    staged = scratch_name(scratch)
    try:
        src.get(relative, staged)
        if sha256_of(staged) != digest:
            raise IntegrityError(f"{src.name(relative)}: sha256 does not match the manifest; "
                                 f"not copied")
        dst.put(staged, relative)
        return staged.stat().st_size
    finally:
        staged.unlink(missing_ok=True)


def _same(source: str | Path, target: str | Path) -> bool:
    if is_uri(source) or is_uri(target):
        return str(source).rstrip("/") == str(target).rstrip("/")
    return Path(source).resolve() == Path(target).resolve()
