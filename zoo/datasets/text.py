"""Byte-level language-model data: the standard library's own source, or a folder of *.txt.

Tokens are bytes, so the vocabulary is fixed at 256 ids: it does not depend on the corpus, any
encoding can be read, and a model trained on one corpus can be evaluated on another.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import numpy as np
import torch

from zoo.datasets.arguments import Param, integer, open_fraction, optional_integer
from zoo.datasets.base import DataBundle, DataInfo
from zoo.errors import DataError, SpecError

VOCAB_SIZE = 256
STDLIB_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
)
Document = tuple[Path, bytes]


def _params(max_chars: int | None) -> dict[str, Param]:
    return {
        "max_chars": Param(max_chars, optional_integer(2)),
        "context": Param(64, integer(1)),
        "test_fraction": Param(0.1, open_fraction),
    }


STDLIB_PARAMS = _params(400_000)
TEXT_FOLDER_PARAMS = _params(None)  # a user's corpus is used whole unless capped


def check_args(args: dict) -> None:
    """Cross-field check: a capped corpus must hold at least one window per split."""
    window = args["context"] + 1
    if args["max_chars"] is not None and args["max_chars"] < 2 * window:
        raise SpecError(
            f"data.args.max_chars: {args['max_chars']} is not allowed; with context "
            f"{args['context']} it must be at least {2 * window} (one window of context + 1 "
            "tokens for train and one for test)"
        )


def info(args: dict) -> DataInfo:
    return DataInfo("language_model", (args["context"],), VOCAB_SIZE)


def stdlib_files() -> list[Path]:
    """The standard library's *.py files in sorted order of their relative POSIX paths."""
    base = Path(sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise DataError(f"stdlib-text: the standard library folder {base} does not exist")
    files = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d not in STDLIB_EXCLUDED_DIRS]
        files += [Path(dirpath, f) for f in filenames if f.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(base).as_posix())


def text_folder_files(root: Path) -> list[Path]:
    """Every *.txt under root (recursively), sorted by relative POSIX path."""
    if not root.is_dir():
        raise DataError(
            f"text-folder: {root} is not a folder; put your plain-text *.txt files in a folder "
            "and give it as data.root"
        )
    files = sorted(
        (p for p in root.rglob("*.txt") if p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise DataError(
            f"text-folder: no *.txt files under {root}; put your plain-text files there "
            "(any encoding: they are read as bytes)"
        )
    return files


def read_documents(
    files: list[Path], max_chars: int | None, require_utf8: bool
) -> list[Document]:
    """Read files in order until max_chars bytes are taken (the last one cut to fit).

    Empty files are dropped; with require_utf8 so are files that are not valid UTF-8.
    """
    documents: list[Document] = []
    total = 0
    for path in files:
        if max_chars is not None and total >= max_chars:
            break
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        if require_utf8:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
        if max_chars is not None:
            data = data[: max_chars - total]
        if data:
            documents.append((path, data))
            total += len(data)
    return documents


def split_documents(
    documents: list[Document], test_fraction: float
) -> tuple[list[Document], list[Document]]:
    """Split by file: the last files go to test until they hold test_fraction of the bytes.

    At least one file stays in train. A single file is cut at (1 - test_fraction) of its bytes
    instead (the only way to have both splits from, e.g., one tiny-shakespeare input.txt).
    """
    if not documents:
        raise DataError("no text to split: every file was empty or skipped")
    if len(documents) == 1:
        path, data = documents[0]
        cut = round(len(data) * (1.0 - test_fraction))
        return [(path, data[:cut])], [(path, data[cut:])]
    target = test_fraction * sum(len(data) for _, data in documents)
    n_test, test_bytes = 0, 0
    while n_test < len(documents) - 1 and test_bytes < target:
        n_test += 1
        test_bytes += len(documents[-n_test][1])
    return documents[:-n_test], documents[-n_test:]


def windows(data: bytes, context: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of context + 1 byte tokens; x = window[:-1], y = window[1:].

    Returns:
        x, y: (num_windows, context) int64; a trailing partial window is dropped.
    """
    width = context + 1
    count = len(data) // width
    if count == 0:
        raise SpecError(
            f"data.args.context: {context} needs {width} tokens per window but the {split} "
            f"split has only {len(data)}; use a smaller context or more text"
        )
    tokens = np.frombuffer(data, dtype=np.uint8, count=count * width).astype(np.int64)
    blocks = torch.from_numpy(tokens).view(count, width)
    return blocks[:, :-1].contiguous(), blocks[:, 1:].contiguous()


def _bundle(name: str, documents: list[Document], args: dict) -> DataBundle:
    train_docs, test_docs = split_documents(documents, args["test_fraction"])
    train = windows(b"".join(d for _, d in train_docs), args["context"], "train")
    test = windows(b"".join(d for _, d in test_docs), args["context"], "test")
    return DataBundle(name, info(args), train, test)


def stdlib_documents(args: dict) -> list[Document]:
    return read_documents(stdlib_files(), args["max_chars"], require_utf8=True)


def load_stdlib_text(args: dict) -> DataBundle:
    """Character (byte) level corpus from this Python's standard library source.

    The fingerprint depends on the Python version, whose stdlib differs.
    """
    return _bundle("stdlib-text", stdlib_documents(args), args)


def load_text_folder(root: Path, args: dict) -> DataBundle:
    """Character (byte) level corpus from every *.txt under root."""
    documents = read_documents(text_folder_files(root), args["max_chars"], require_utf8=False)
    if not documents:
        raise DataError(f"text-folder: every *.txt file under {root} is empty")
    return _bundle("text-folder", documents, args)
