"""Commits that keep every reader working at every rename.

A reader accepts a folder when zoo.json and README.md have the sha256 the manifest records and
the card names only the manifest's shards. Two files cannot be renamed at once, so a commit
that replaces a document goes in three renames, each leaving a folder readers accept:

1. the manifest records the new document's sha256 and keeps the old one's in `previous`
   (readers accept either copy);
2. the document is renamed into place; for README.md the files of the `retired` shards (those
   commits dropped while the old card still named them) are deleted after it;
3. the manifest forgets `previous` (and `retired`, once the card is new).

Commits that drop shards while a card exists (a cell committed again, relabelled tables) move
them to `retired` instead of deleting their files, so the card on disk never names a missing
or unlisted file; the next card clears them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Callable, Sequence

from zoo.folder.manifest import ABSENT, Manifest, Shard
from zoo.folder.names import README, ZOO_JSON, sha256_of
from zoo.folder.record import ZooRecord
from zoo.folder.zoofolder import ZooFolder


def replace_document(folder: ZooFolder, name: str, digest: str, write: Callable[[], None],
                     **changes: object) -> Manifest:
    """Replace document `name` (its new bytes hash to `digest`; `write()` renames them into
    place) in the three steps above; `changes` are other manifest fields the new document goes
    with (zoo.json: spec_hash). Returns the manifest written last."""
    manifest = folder.manifest()
    assert manifest is not None, "a document is replaced under a manifest"
    path = folder.check(name)
    held = sha256_of(path) if os.path.lexists(path) else ABSENT
    folder.write_manifest(dataclasses.replace(
        manifest, documents={**manifest.documents, name: digest},
        previous={**manifest.previous, name: held}, **changes))
    write()
    if name == README:
        for shard in manifest.retired:
            folder.delete(shard.path)
    current = folder.manifest()
    assert current is not None
    final = dataclasses.replace(
        current, previous={k: v for k, v in current.previous.items() if k != name},
        retired=() if name == README else current.retired)
    folder.write_manifest(final)
    return final


def write_record_under(folder: ZooFolder, record: ZooRecord) -> Manifest | None:
    """Write zoo.json; in a folder with a manifest, through `replace_document` (a growing zoo's
    new spec), so readers find the old spec or the new one, never a refused pair. Returns the
    manifest when one was replaced (None: a new folder, whose caller writes the first)."""
    if folder.manifest() is None:
        folder.write_record(record)
        return None
    digest = hashlib.sha256(record.to_json().encode()).hexdigest()
    return replace_document(folder, ZOO_JSON, digest, lambda: folder.write_record(record),
                            spec_hash=record.spec_hash)


def write_card_under(folder: ZooFolder, text: str) -> None:
    """Write README.md through `replace_document` (its retired shards go with the old card)."""
    data = text.encode()
    replace_document(folder, README, hashlib.sha256(data).hexdigest(),
                     lambda: folder.write(README, data))


def drop_shards(manifest: Manifest, dropped: Sequence[Shard]) -> Manifest:
    """`manifest` without `dropped` in its shards: they go to `retired` (files kept) while a
    card that may name them exists, else their files are deleted once the manifest is written
    (the caller writes it, then calls `delete_dropped`)."""
    gone = {s.path for s in dropped}
    shards = tuple(s for s in manifest.shards if s.path not in gone)
    retired = manifest.retired + tuple(dropped) if README in manifest.documents else \
        manifest.retired
    return dataclasses.replace(manifest, shards=shards, retired=retired)


def delete_dropped(folder: ZooFolder, manifest: Manifest, dropped: Sequence[Shard]) -> None:
    """Delete the files of `dropped` that `manifest` (written) did not retire."""
    kept = {s.path for s in manifest.shards + manifest.retired}
    for shard in dropped:
        if shard.path not in kept:
            folder.delete(shard.path)
