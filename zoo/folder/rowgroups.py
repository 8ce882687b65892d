"""Models Parquet shards checked a row group at a time, without hashing the whole file.

The writer records, in the shard's manifest entry (`parts`), the sha256 of the file's footer
(its last bytes: footer, footer length, b"PAR1") and, for each row group, of
its column chunks but weights (in schema order) and of its weights chunk. A reader checks the
footer before parsing it and a row group's chunks before decoding them, so one row costs its
row group, not its shard; `zoo verify` still hashes whole shards against `sha256`.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.names import open_regular

WEIGHTS_LEAVES = ("weights", "weights.list.element")  # the Parquet leaf of the weights:
#                                                      bytes (format 5), list (3, 4)
PARQUET_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError)  # a truncated or odd file
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


def _sha256(fd: int, spans: list[Span]) -> str:
    digest = hashlib.sha256()
    for start, length in spans:
        done = 0
        while done < length:
            block = os.pread(fd, min(1 << 20, length - done), start + done)
            if not block:
                break
            digest.update(block)
            done += len(block)
    return digest.hexdigest()


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
        parts = [_sha256(fd, [_footer_span(fd, path)])]
        for group in range(metadata.num_row_groups):
            columns, weights = chunk_spans(metadata, group)
            parts += [_sha256(fd, columns), _sha256(fd, [weights] if weights else [])]
    return tuple(parts)


class CheckedShard:
    """One models Parquet shard whose footer was checked against its recorded digest; row
    groups are checked (chunks but weights, or weights) before they are decoded."""

    def __init__(self, path: Path, parts: tuple[str, ...]) -> None:
        self.path, self.parts = path, parts
        with open_regular(path) as handle:  # checked before a byte of it is parsed
            footer = _sha256(handle.fileno(), [_footer_span(handle.fileno(), path)])
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
                self._checked_bytes(handle.fileno(), group, weights=weights)

    def _checked_bytes(self, fd: int, group: int, *, weights: bool) -> list[tuple[int, bytes]]:
        """Row group `group`'s chunks (weights, or all but weights) read once, as (offset,
        bytes) pieces, after their digest matched the manifest's."""
        columns, weights_span = chunk_spans(self.metadata, group)
        spans = ([weights_span] if weights_span else []) if weights else columns
        pieces, digest = [], hashlib.sha256()
        for start, length in spans:
            data = os.pread(fd, length, start)
            digest.update(data)
            pieces.append((start, data))
        if digest.hexdigest() != self.parts[1 + 2 * group + weights]:
            what = "weights" if weights else "columns"
            raise IntegrityError(f"{self.path}: row group {group} ({what}) does not match the "
                                 f"manifest's digest; the shard is corrupted or was modified")
        return pieces

    def read_group(self, group: int, columns: list[str]) -> pa.Table:
        """Row group `group`'s `columns`, decoded from the very bytes checked (one read of
        each chunk); a decode failure names the file."""
        with open_regular(self.path) as handle:
            fd, size = handle.fileno(), os.fstat(handle.fileno()).st_size
            pieces = self._checked_bytes(fd, group, weights=True) if "weights" in columns \
                else []
            if any(c != "weights" for c in columns):
                pieces += self._checked_bytes(fd, group, weights=False)
        try:
            return pq.ParquetFile(CheckedBytes(pieces, size), metadata=self.metadata
                                  ).read_row_group(group, columns=columns,
                                                   use_threads=False)  # one group: threads cost
        except PARQUET_ERRORS as error:
            raise ZooFolderError(f"{self.path}: cannot read row group {group} ({error})") \
                from None


class CheckedBytes(io.RawIOBase):
    """A read-only file of `size` bytes of which only `pieces` ((offset, bytes), checked) can
    be read: Parquet decodes them without a second read, and a read of any other byte (a
    footer that points outside its checked chunks) is refused."""

    def __init__(self, pieces: list[tuple[int, bytes]], size: int) -> None:
        super().__init__()
        self.pieces, self.size, self.position = sorted(pieces), size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(self.size - self.position, 0))
        done = 0
        while done < wanted:  # a read may span adjacent chunks
            piece = next(((start, data) for start, data in self.pieces
                          if start <= self.position < start + len(data)), None)
            if piece is None:
                raise OSError(f"read at byte {self.position} outside the checked row group")
            low = self.position - piece[0]
            count = min(wanted - done, len(piece[1]) - low)
            view[done:done + count] = piece[1][low:low + count]
            self.position += count
            done += count
        return done
