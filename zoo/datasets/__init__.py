"""The data-set registry: names, cheap validation of a spec's data section, and loading.

Built-ins (mnist1d, digits, stdlib-text, convection, and the fine-tuning study's transfer
targets mnist1d-shifted and digits-transposed) are made offline from installed packages.
Folder data sets (cifar10, cifar100, svhn, tiny-imagenet, text-folder) read files the user has
put under `data.root`; nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.datasets import builtin, convection, folders, text, tinyimagenet, transfer
from zoo.datasets.arguments import Param, resolve
from zoo.datasets.base import DataBundle, DataInfo
from zoo.datasets.convection import exact_solution
from zoo.datasets.normalize import is_image, normalize_images
from zoo import limits
from zoo.errors import SpecError

__all__ = ["DataBundle", "DataInfo", "exact_solution", "load", "names", "validate"]


@dataclass(frozen=True)
class _Entry:
    """How to check and build one data set.

    build takes (root or None, resolved args). locate, for folder data sets, checks that the
    expected files exist under root (DataError otherwise) without reading them.
    """

    build: Callable[[Path | None, dict[str, Any]], DataBundle]
    params: Mapping[str, Param] = field(default_factory=dict)
    check_args: Callable[[dict[str, Any]], None] | None = None
    locate: Callable[[Path], Any] | None = None


_REGISTRY: dict[str, _Entry] = {
    "mnist1d": _Entry(lambda root, args: builtin.load_mnist1d()),
    "digits": _Entry(lambda root, args: builtin.load_digits()),
    "mnist1d-shifted": _Entry(lambda root, args: transfer.shifted_mnist1d()),
    "digits-transposed": _Entry(lambda root, args: transfer.transposed_digits()),
    "stdlib-text": _Entry(
        lambda root, args: text.load_stdlib_text(args), text.STDLIB_PARAMS, text.check_args
    ),
    "convection": _Entry(
        lambda root, args: convection.load_convection(args), convection.PARAMS
    ),
    "cifar10": _Entry(
        lambda root, args: folders.load_cifar(folders.CIFAR10, root),
        locate=lambda root: folders.cifar_folder(folders.CIFAR10, root),
    ),
    "cifar100": _Entry(
        lambda root, args: folders.load_cifar(folders.CIFAR100, root),
        locate=lambda root: folders.cifar_folder(folders.CIFAR100, root),
    ),
    "svhn": _Entry(lambda root, args: folders.load_svhn(root), locate=folders.svhn_folder),
    "tiny-imagenet": _Entry(
        lambda root, args: tinyimagenet.load_tiny_imagenet(root),
        locate=tinyimagenet.tiny_imagenet_folder,
    ),
    "text-folder": _Entry(
        text.load_text_folder,
        text.TEXT_FOLDER_PARAMS,
        text.check_args,
        locate=text.text_folder_files,
    ),
}


def names() -> list[str]:
    """Every registered data-set name, sorted."""
    return sorted(_REGISTRY)


def _check(
    name: str, root: str | os.PathLike[str] | None, args: Mapping[str, Any] | None
) -> tuple[_Entry, Path | None, dict[str, Any]]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise SpecError(f"data.name: {name!r} is not a known data set; allowed: "
                        f"{', '.join(names())}")
    entry = _REGISTRY[name]
    resolved = resolve(name, args, entry.params)
    if entry.check_args is not None:
        entry.check_args(resolved)
    has_root = root is not None and str(root) != ""
    if entry.locate is None:
        if has_root:
            raise SpecError(f"data.root: {limits.short_repr(str(root), 300)} is not used by {name}, a built-in data "
                            "set; leave data.root out")
        return entry, None, resolved
    if not has_root:
        raise SpecError(f"data.root is required for {name}: the folder holding its files")
    path = Path(root).expanduser()
    entry.locate(path)
    return entry, path, resolved


def needs_root(name: str) -> bool:
    """True for data sets read from a local folder (`data.root`)."""
    return name in _REGISTRY and _REGISTRY[name].locate is not None


FOLDER_INFO = {
    "cifar10": DataInfo("classification", (3, 32, 32), 10),
    "cifar100": DataInfo("classification", (3, 32, 32), 100),
    "svhn": DataInfo("classification", (3, 32, 32), 10),
    "tiny-imagenet": DataInfo("classification", (3, 64, 64), 200),
}


BUILTIN_INFO = {"mnist1d": builtin.MNIST1D_INFO, "digits": builtin.DIGITS_INFO,
                "convection": convection.INFO}


def describe(name: str, args: Mapping[str, Any] | None = None) -> DataInfo:
    """The DataInfo of a data set without reading a folder or making data (plans, dry runs)."""
    if name in FOLDER_INFO:
        return FOLDER_INFO[name]
    if name in BUILTIN_INFO:
        return BUILTIN_INFO[name]
    if name in ("text-folder", "stdlib-text"):
        return text.info(resolve(name, args, _REGISTRY[name].params))
    return load(name, args=args).info


def validate(
    name: str, root: str | os.PathLike[str] | None, args: Mapping[str, Any] | None
) -> None:
    """Check a spec's data section without loading any data.

    Raises:
        SpecError: unknown name (the message lists the allowed ones), unknown or invalid
            argument (naming data.args.<key>), data.root missing for a folder data set or
            given for a built-in.
        DataError: a folder data set's root or expected files are missing (naming the path
            and what to download where).
    """
    _check(name, root, args)


def load(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    args: Mapping[str, Any] | None = None,
) -> DataBundle:
    """Validate, then build the data set in memory; the same call gives the same tensors.

    Returns:
        a DataBundle: float32 inputs, int64 labels or tokens (see each module for shapes).
        Image inputs (C, H, W) come normalised per channel with their train set's mean and
        standard deviation (`bundle.normalization`), as the published recipe does.
    """
    entry, path, resolved = _check(name, root, args)
    bundle = entry.build(path, resolved)
    if is_image(bundle.info) and bundle.normalization is None:
        return normalize_images(bundle)
    return bundle  # raw, or normalised by its builder (a transfer target: its source's stats)
