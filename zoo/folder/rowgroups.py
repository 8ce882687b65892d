"""Models Parquet shards checked a row group at a time, without hashing the whole file.

The writer records, in the shard's manifest entry (`parts`), the digest of the file's footer
(its last bytes: footer, footer length, b"PAR1") and, for each row group, of
its column chunks but weights (in schema order) and of its weights chunk. A reader checks the
footer before parsing it and a row group's chunks before decoding them, so one row costs its
row group, not its shard; `zoo verify` still hashes whole shards against `sha256`.

Digests are BLAKE3 (cryptographic, ~3.5x sha256's speed on one core), written "blake3:<hex>";
a bare hex digest is the sha256 that format-4 writers recorded.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.names import open_regular, open_regular_fd
from zoo.folder.plainpages import plain_rows, row_pieces

WEIGHTS_LEAVES = ("weights", "weights.list.element")  # the Parquet leaf of the weights:
#                                                      bytes (format 5), list (3, 4)
PARQUET_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError)  # a truncated or odd file
THREADED_BYTES = 1 << 20  # a row hashed on all cores from this size up
TAIL_BYTES = 8  # a Parquet file ends with the footer's length (4 bytes) and b"PAR1"
Span = tuple[int, int]  # offset, length


def chunk_spans(metadata: pq.FileMetaData, group: int) -> tuple[list[Span], Span | None]:
    """Byte spans of row group `group`'s column chunks: those but weights, and the weights."""
    columns, weights = [], None
    row_group = metadata.row_group(group)
    for i in range(row_group.num_columns):
        chunk = row_group.column(i)
        start = chunk.dictionary_page_offset if chunk.has_dictionary_page else \
            chunk.data_page_offset
        span = (int(start), int(chunk.total_compressed_size))
        if chunk.path_in_schema in WEIGHTS_LEAVES:
            weights = span
        else:
            columns.append(span)
    return columns, weights


BLAKE3 = "blake3:"  # prefix of a BLAKE3 part (format 5); a bare hex digest is a sha256


def _hasher(like: str) -> Any:
    """A new hash of the algorithm that digest `like` was made by."""
    return blake3.blake3() if like.startswith(BLAKE3) else hashlib.sha256()


def _threads(length: int) -> int:
    """BLAKE3 threads for `length` bytes: all cores from 1 MiB up (4.4 MB: 0.44 ms instead of
    0.68 on 2 cores), one below (a thread pool costs more than it saves)."""
    return blake3.blake3.AUTO if length >= THREADED_BYTES else 1


def row_digest(flat: np.ndarray) -> str:
    """A row's `weights_sha256` for inline weights (format 7): BLAKE3 of its float32 bytes."""
    data = memoryview(np.ascontiguousarray(flat, dtype="<f4")).cast("B")
    return BLAKE3 + blake3.blake3(data, max_threads=_threads(len(data))).hexdigest()


def _hexdigest(digest: Any) -> str:
    """A digest as the manifest writes it."""
    return (BLAKE3 if isinstance(digest, blake3.blake3) else "") + digest.hexdigest()


def _digest(fd: int, spans: list[Span], like: str = BLAKE3) -> str:
    digest = _hasher(like)
    for start, length in spans:
        done = 0
        while done < length:
            block = os.pread(fd, min(1 << 20, length - done), start + done)
            if not block:
                break
            digest.update(block)
            done += len(block)
    return _hexdigest(digest)


def _footer_span(fd: int, path: Path) -> Span:
    size = os.fstat(fd).st_size
    tail = os.pread(fd, TAIL_BYTES, max(size - TAIL_BYTES, 0))
    if len(tail) != TAIL_BYTES or tail[4:] != b"PAR1":
        raise ZooFolderError(f"{path}: cannot be read as Parquet (no footer)")
    length = int.from_bytes(tail[:4], "little") + TAIL_BYTES
    if length > size - 4:
        raise ZooFolderError(f"{path}: cannot be read as Parquet (footer of {length} bytes "
                             f"in a file of {size})")
    return size - length, length


def shard_parts(path: Path) -> tuple[str, ...]:
    """The digests a writer records for the finished Parquet file `path`: footer first, then
    per row group its chunks but weights and its weights chunk (empty hash when none)."""
    metadata = pq.read_metadata(path)
    with open_regular(path) as handle:
        fd = handle.fileno()
        parts = [_digest(fd, [_footer_span(fd, path)])]
        for group in range(metadata.num_row_groups):
            columns, weights = chunk_spans(metadata, group)
            parts += [_digest(fd, columns), _digest(fd, [weights] if weights else [])]
    return tuple(parts)


class CheckedShard:
    """One models Parquet shard whose footer was checked against its recorded digest; row
    groups are checked (chunks but weights, or weights) before they are decoded."""

    def __init__(self, path: Path, parts: tuple[str, ...]) -> None:
        self.path, self.parts = path, parts
        self._spans: dict[int, tuple[list[Span], Span | None]] = {}
        self._plain: dict[int, Span | None] = {}  # plain weights chunks
        self._plain_leaf: int | None = None  # their column (-1: none)
        self._pieces: dict[int, list[Span] | None] = {}  # rows found in them (in the file)
        with open_regular(path) as handle:  # checked before a byte of it is parsed
            footer = _digest(handle.fileno(), [_footer_span(handle.fileno(), path)], parts[0])
        if footer != parts[0]:
            raise IntegrityError(f"{path}: footer does not match the manifest's digest; the "
                                 f"shard is corrupted or was modified")
        try:
            self.metadata = pq.read_metadata(path)
        except PARQUET_ERRORS as error:
            raise ZooFolderError(f"{path}: cannot be read as Parquet ({error})") from None
        if len(parts) != 1 + 2 * self.metadata.num_row_groups:
            raise IntegrityError(f"{path}: {self.metadata.num_row_groups} row groups, the "
                                 f"manifest has digests for {(len(parts) - 1) // 2}")

    def check(self, groups: range | list[int], *, weights: bool) -> None:
        """Refuse (IntegrityError naming the file and row group) any of `groups` whose chunks
        (weights, or all but weights) differ from the manifest's digests."""
        with open_regular(self.path) as handle:
            for group in groups:
                self._read_checked(handle.fileno(), group, self._image(handle.fileno(), group),
                                   weights=weights)

    def spans(self, group: int) -> tuple[list[Span], Span | None]:
        """`chunk_spans` of row group `group` (worked out once)."""
        if group not in self._spans:
            self._spans[group] = chunk_spans(self.metadata, group)
        return self._spans[group]

    def _image(self, fd: int, group: int) -> np.ndarray:
        """Zeros up to the end of row group `group`'s last chunk (an anonymous mapping: only
        the pages written cost memory), where `_read_checked` puts chunks at their offsets."""
        columns, weights = self.spans(group)
        end = max((start + length for start, length in [*columns, *([weights] if weights
                                                                    else [])]), default=0)
        size = os.fstat(fd).st_size
        if end > size:
            raise ZooFolderError(f"{self.path}: row group {group} ends at byte {end}, past the "
                                 f"file's {size}")
        return np.frombuffer(mmap.mmap(-1, max(end, 1)), np.uint8)

    def _read_checked(self, fd: int, group: int, image: np.ndarray, *, weights: bool) -> None:
        """Read row group `group`'s chunks (weights, or all but weights) once, into `image` at
        their file offsets, and refuse them unless their digest matches the manifest's."""
        columns, weights_span = self.spans(group)
        spans = ([weights_span] if weights_span else []) if weights else columns
        digest = _hasher(self.parts[1 + 2 * group + weights])
        for start, length in spans:
            view = memoryview(image)[start:start + length]
            self._read_into(fd, view, start, group)
            digest.update(view)
        self._verify(digest, group, weights=weights)

    def _read_into(self, fd: int, view: memoryview, offset: int, group: int) -> None:
        """Fill `view` with the file's bytes from `offset` (inside row group `group`)."""
        done = 0
        while done < len(view):
            count = os.preadv(fd, [view[done:]], offset + done)
            if count <= 0:
                raise ZooFolderError(f"{self.path}: ends inside row group {group}")
            done += count

    def _verify(self, digest: Any, group: int, *, weights: bool) -> None:
        """Refuse row group `group`'s chunks (weights, or all but weights) unless `digest`
        of their bytes is the manifest's."""
        if _hexdigest(digest) != self.parts[1 + 2 * group + weights]:
            what = "weights" if weights else "columns"
            raise IntegrityError(f"{self.path}: row group {group} ({what}) does not match the "
                                 f"manifest's digest; the shard is corrupted or was modified")

    def _plain_span(self, group: int) -> Span | None:
        """Row group `group`'s weights chunk when it is plain, uncompressed bytes (format 5 on),
        which `plain_rows` and `row_pieces` read in place; None otherwise (Arrow decodes).
        Worked out once."""
        if group not in self._plain:
            self._plain[group] = self._find_plain_span(group)
        return self._plain[group]

    def _find_plain_span(self, group: int) -> Span | None:
        if self._plain_leaf is None:
            leaves = [self.metadata.schema.column(i) for i in range(self.metadata.num_columns)]
            self._plain_leaf = next((i for i, c in enumerate(leaves) if c.path == "weights" and
                                     c.max_definition_level == 1 and
                                     c.max_repetition_level == 0), -1)
        if self._plain_leaf < 0:
            return None
        chunk = self.metadata.row_group(group).column(self._plain_leaf)
        if chunk.compression != "UNCOMPRESSED" or chunk.has_dictionary_page:
            return None
        return int(chunk.data_page_offset), int(chunk.total_compressed_size)

    def read_weights(self, group: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Row group `group`'s weights as `plain_rows` finds them in the checked chunk (flat
        float32 values and row offsets) when the chunk is plain and uncompressed bytes (format
        5); None otherwise, for `read_group`."""
        span = self._plain_span(group)
        if span is None:
            return None
        with open_regular(self.path) as handle:
            data = os.pread(handle.fileno(), span[1], span[0])
        digest = _hasher(self.parts[2 + 2 * group])
        digest.update(data)
        self._verify(digest, group, weights=True)
        return plain_rows(data, self.metadata.row_group(group).num_rows)

    def locate(self, groups: dict[int, list[int]]) -> None:
        """Find the rows of each row group in `groups` in the file now, from page headers
        and the rows' expected bytes (`groups`: row group -> each row's, in order; see
        `row_pieces`), so that `read_row` reads a row with a single `pread`."""
        fd = open_regular_fd(self.path)
        try:
            for group, lengths in groups.items():
                self._row_spans(fd, group, lengths)
        finally:
            os.close(fd)

    def _row_spans(self, fd: int, group: int, lengths: list[int] | None = None
                   ) -> list[Span] | None:
        """Each row of row group `group`: (file offset, bytes) of its weights; None when the
        chunk is not plain bytes whose rows its page headers locate (with `lengths`, rows of
        those bytes). Worked out once."""
        if group not in self._pieces:
            span = self._plain_span(group)
            pieces = None if span is None else row_pieces(
                lambda pos, count: os.pread(fd, count, span[0] + pos), span[1],
                self.metadata.row_group(group).num_rows, lengths=lengths)
            self._pieces[group] = None if pieces is None else \
                [(span[0] + start, length) for start, length in pieces]
        return self._pieces[group]

    def read_row(self, group: int, row: int, digest: str, size: int,
                 out: np.ndarray | None = None) -> np.ndarray | None:
        """Row `row` of row group `group`: its `size` float32 weights read alone (one `pread`
        into the array returned: `out` when given) and refused unless their BLAKE3 is
        `digest` (the row's `weights_sha256`, format 7, checked with the row group's other
        columns); None when the chunk is not plain bytes whose rows its page headers locate
        (read the group)."""
        fd = open_regular_fd(self.path)
        try:
            spans = self._row_spans(fd, group)
            if spans is None:
                return None
            start, length = spans[row]
            if length != 4 * size:
                raise ZooFolderError(f"{self.path}: row group {group}, row {row} holds "
                                     f"{length // 4} weights; its layout has {size}")
            values = np.empty(size, "<f4") if out is None else out
            self._read_into(fd, memoryview(values).cast("B"), start, group)
        finally:
            os.close(fd)
        if row_digest(values) != digest:
            raise IntegrityError(f"{self.path}: row group {group}, row {row} (weights) does "
                                 f"not match its digest (weights_sha256); the shard is "
                                 f"corrupted or was modified")
        return values

    def read_group(self, group: int, columns: list[str]) -> pa.Table:
        """Row group `group`'s `columns`, decoded from the very bytes checked (one read of
        each chunk, no copy): Arrow reads an image of the file holding only those chunks
        and zeros elsewhere; a decode failure names the file."""
        with open_regular(self.path) as handle:
            image = self._image(handle.fileno(), group)
            if "weights" in columns:
                self._read_checked(handle.fileno(), group, image, weights=True)
            if any(c != "weights" for c in columns):
                self._read_checked(handle.fileno(), group, image, weights=False)
        try:
            return pq.ParquetFile(pa.BufferReader(pa.py_buffer(image)), metadata=self.metadata
                                  ).read_row_group(group, columns=columns,
                                                   use_threads=False)  # one group: threads cost
        except PARQUET_ERRORS as error:
            raise ZooFolderError(f"{self.path}: cannot read row group {group} ({error})") \
                from None
