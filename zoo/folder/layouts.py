"""layouts/<key>.json: one file per architecture and width, checked against the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.names import LAYOUTS, confined, read_json, sha256_of
from zoo.datasets.base import DataInfo
from zoo.layout import Layout, layout_of
from zoo.limits import (ARCHITECTURE_ARG_LIMITS, MAX_PARAMETERS, MAX_WIDTH, check_arguments,
                        refuse)

if TYPE_CHECKING:
    from zoo.folder.zoofolder import ZooFolder


def write_layout(folder: ZooFolder, layout: Layout) -> str:
    """Write layouts/<key>.json atomically (confined); returns its sha256 for the manifest."""
    return sha256_of(folder.write(f"{LAYOUTS}/{layout.key}.json", layout.to_json().encode()))


def read_layout(root: Path, key: str, sha256: str) -> Layout:
    """The layout `key`, refused when its file does not match `sha256` or is malformed."""
    path = confined(Path(root), f"{LAYOUTS}/{key}.json")
    if sha256_of(path) != sha256:
        raise IntegrityError(f"{path}: sha256 does not match the manifest")
    try:
        layout = Layout.from_body(read_json(path, "layout"))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ZooFolderError(f"{path}: not a layout this version can read ({error})") from None
    if layout.key != key:
        raise ZooFolderError(f"{path}: holds layout {layout.key!r}, not {key!r}")
    if layout.size > MAX_PARAMETERS:
        raise ZooFolderError(f"{path}: {layout.size} values per checkpoint; at most "
                             f"{MAX_PARAMETERS} are read")
    return layout


def check_architecture(layout: Layout, info: DataInfo, source: Path | str) -> None:
    """Refuse a layout whose names, shapes or dtypes differ from its architecture's, rebuilt on
    the meta device from the layout's family, width, args and zoo.json's data shape facts (no
    memory is allocated, so a tampered width cannot make a reader allocate)."""
    import torch

    from zoo import architectures
    from zoo.errors import ZooError

    try:
        if not 1 <= layout.width <= MAX_WIDTH:
            raise refuse(f"layout {layout.key}: width", layout.width, f"1 to {MAX_WIDTH}")
        check_arguments(dict(layout.args), f"layout {layout.key}: args",
                        ARCHITECTURE_ARG_LIMITS)
        with torch.device("meta"):
            model = architectures.build(layout.family, width=layout.width, info=info,
                                        args=dict(layout.args))
    except (ZooError, ValueError, TypeError) as error:
        raise ZooFolderError(f"{source}: layout {layout.key} names no buildable architecture "
                             f"({error})") from None
    expected = layout_of(model, layout.family, layout.width, layout.args)
    ours = [(e.name, e.shape, e.dtype) for e in layout.entries]
    theirs = [(e.name, e.shape, e.dtype) for e in expected.entries]
    if ours != theirs or expected.key != layout.key:
        differing = next((f"{a} vs {b}" for a, b in zip(ours, theirs) if a != b),
                         f"{len(ours)} entries vs {len(theirs)}")
        raise ZooFolderError(f"{source}: layout {layout.key} differs from its architecture "
                             f"{expected.key} (first difference: {differing})")
