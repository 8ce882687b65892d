"""Where `zoo plot` and `zoo study` put their files: by default beside the zoo's data, in its
`plots/` or `studies/<name>/` (the folder's, or the prefix's on an object store), else in the
location the user gives (a folder or a URI).

Figures and tables are made in a local folder (matplotlib and Parquet writers need a file), then,
for a store, each is stored with one PUT under the zoo's prefix (or the given one), so a reader
of the store sees a whole file or none. Nothing here is listed by the manifest: `zoo sync` does
not copy these files, and `zoo generate` never removes them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath

from zoo.folder.location import StorePrefix, is_uri, open_location
from zoo.folder.zoofolder import ZooFolder


class Outputs:
    """A command's output folder, opened.

    Args:
        root: the zoo's location (a folder or a URI).
        out: where the user asked for the files (a folder or a URI), or None: `relative`
            inside the zoo.
        relative: the zoo's own folder for these files, e.g. "plots".

    `folder` is the local folder to write into; `publish(paths)` stores them where they belong
    and returns the names to show (local paths, or URIs).
    """

    def __init__(self, root: str | Path, out: str | Path | None, relative: str) -> None:
        target, prefix = (root, relative) if out is None else (out, "")
        self.store: StorePrefix | None = None
        self.prefix = prefix
        if is_uri(target):
            store = open_location(target)
            assert isinstance(store, StorePrefix)
            self.store = store
            self.folder = Path(tempfile.mkdtemp(prefix="zoo-outputs-"))
        elif out is None:  # inside the zoo: confined (no link on the way, regular files only)
            zoo = ZooFolder(root)
            self.folder = zoo.makedirs(relative)
            zoo.check_tree(relative)
        else:
            self.folder = Path(out)
            self.folder.mkdir(parents=True, exist_ok=True)

    def publish(self, paths: list[Path]) -> list[Path | str]:
        """Store the files made in `folder` (for a store; a folder holds them already) and
        return where they are, in order: the local paths, or the objects' URIs."""
        if self.store is None:
            return list(paths)
        try:
            names: list[Path | str] = []
            for path in paths:
                relative = str(PurePosixPath(self.prefix, path.relative_to(self.folder).as_posix()))
                self.store.put(path, relative)
                names.append(self.store.name(relative))
            return names
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
