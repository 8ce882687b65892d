"""A command's output folder: refuse a file given as one, remove what a failed command made."""

from __future__ import annotations

import shutil
from pathlib import Path

from zoo.errors import ZooError


def folder_option(value: str, expected: str) -> Path:
    """An --out folder; one that names an existing file is refused before any work."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ZooError(f"--out: {value} is a file, not a folder; expected {expected}")
    return path


def new_folders(out: Path) -> list[Path]:
    """`out` and those of its parents that do not exist yet (a refused import removes them)."""
    missing = []
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def remove_created(out: Path, created: list[Path], was_empty: bool) -> None:
    """Remove what a failed command wrote: `out` if it was new (then its new parents), or
    everything in it if it was an empty folder before."""
    if was_empty:
        for child in list(out.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)  # cleanup must not hide the error
            else:
                child.unlink(missing_ok=True)
    if not created:
        return
    shutil.rmtree(out, ignore_errors=True)
    for folder in created[1:]:
        try:
            folder.rmdir()
        except OSError:
            break
