"""A format-5 weights chunk read without Arrow: each row's float32 bytes found in place.

The writer stores `weights` PLAIN and uncompressed, so a row group's chunk is a run of data
pages (version 1): a Thrift compact page header, the definition levels (4-byte length, then
the levels), then each row's bytes after a 4-byte length. Reading the values where they lie
saves Arrow's copy of every byte (and its fresh pages): a 4.4 MB checkpoint costs its read
and its digest. Anything else (another page type, a null row, a length past the page) gives
None, and Arrow decodes the chunk. `row_pieces` finds the rows from a file too, reading only
page headers and value lengths, so one row can be read alone (format 7).
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Sequence

import numpy as np

DATA_PAGE = 0  # PageType.DATA_PAGE (version 1)
PLAIN = 0  # Encoding.PLAIN
_FIXED = {3: 1, 7: 8}  # compact types of fixed size: byte, double


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _zigzag(data: memoryview, pos: int) -> tuple[int, int]:
    value, pos = _varint(data, pos)
    return (value >> 1) ^ -(value & 1), pos


def _value(data: memoryview, pos: int, kind: int, depth: int) -> tuple[Any, int]:
    """One Thrift compact value of type `kind` at `pos`: (value, next position)."""
    if depth > 8:
        raise ValueError("nested too deep")
    if kind in (1, 2):  # a boolean field: its value is its type
        return kind == 1, pos
    if kind in _FIXED:
        return None, pos + _FIXED[kind]
    if kind in (4, 5, 6):
        return _zigzag(data, pos)
    if kind == 8:
        size, pos = _varint(data, pos)
        return None, pos + size
    if kind in (9, 10):
        header, pos = data[pos], pos + 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, pos = _varint(data, pos)
        for _ in range(size):
            _, pos = _value(data, pos, 3 if element in (1, 2) else element, depth + 1)
        return None, pos
    if kind == 11:
        size, pos = _varint(data, pos)
        if size:
            types, pos = data[pos], pos + 1
            for _ in range(size):
                _, pos = _value(data, pos, types >> 4, depth + 1)
                _, pos = _value(data, pos, types & 0x0F, depth + 1)
        return None, pos
    if kind == 12:
        return _struct(data, pos, depth + 1)
    raise ValueError(f"unknown Thrift compact type {kind}")


def _struct(data: memoryview, pos: int, depth: int = 0) -> tuple[dict[int, Any], int]:
    """A Thrift compact struct at `pos`: its integer and struct fields by id, next position."""
    fields: dict[int, Any] = {}
    last = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated struct")
        header, pos = data[pos], pos + 1
        if header == 0:
            return fields, pos
        kind, delta = header & 0x0F, header >> 4
        if delta:
            last += delta
        else:
            last, pos = _zigzag(data, pos)
        fields[last], pos = _value(data, pos, kind, depth)


Read = Callable[[int, int], bytes | memoryview]  # (position, count) -> up to count bytes
HEADER_BYTES = 1024  # read for a page header from a file: the writer's (no statistics) are ~30


def row_pieces(read: Read, size: int, rows: int, header_bytes: int = HEADER_BYTES,
               lengths: Sequence[int] | None = None) -> list[tuple[int, int]] | None:
    """(start, bytes) of each of the `rows` rows in a weights chunk of `size` bytes, found
    by `read` from page headers and value lengths alone (no value is read), or from page
    headers and the rows' expected `lengths` in bytes (two reads a page: a cold file costs
    a few reads, not one a row; the caller checks the bytes it reads against their digest);
    None when the chunk is not plain version-1 pages of `rows` non-null values of whole
    float32s (of `lengths`, each page filled exactly)."""
    if lengths is not None and len(lengths) != rows:
        return None
    pieces: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            header, used = _struct(memoryview(read(pos, min(header_bytes, size - pos))), 0)
            pos += used
            page, length = header.get(1), header.get(3)
            page_header = header.get(5)
            if page != DATA_PAGE or not isinstance(page_header, dict) or length is None \
                    or page_header.get(2) != PLAIN or length != header.get(2) \
                    or not 0 <= length <= size - pos:
                return None
            end, values = pos + length, page_header.get(1)
            at = pos + 4 + _word(read, pos)  # the definition levels' length, then the levels
            for _ in range(values or 0):
                if at + 4 > end or (lengths is not None and len(pieces) >= len(lengths)):
                    return None  # fewer values than the page counts: nulls
                count = _word(read, at) if lengths is None else lengths[len(pieces)]
                if at + 4 + count > end or count % 4:
                    return None
                pieces.append((at + 4, count))
                at += 4 + count
            if at != end:
                return None
            pos = end
    except (ValueError, IndexError, struct.error):
        return None
    return pieces if len(pieces) == rows else None


def _word(read: Read, pos: int) -> int:
    """The little-endian 4-byte length at `pos`."""
    data = read(pos, 4)
    if len(data) != 4:
        raise ValueError("truncated length")
    return int.from_bytes(data, "little")


def plain_rows(chunk: bytes, rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The `rows` rows of a weights chunk as flat float32 values (a read-only view of `chunk`
    for one row, else a copy: lengths lie between rows) and row offsets; None when the chunk is not
    plain version-1 pages of `rows` non-null values of whole float32s (Arrow then decodes)."""
    data = memoryview(chunk)
    pieces = row_pieces(lambda pos, count: data[pos:pos + count], len(data), rows, len(data))
    if pieces is None:
        return None
    offsets = np.zeros(rows + 1, np.int64)
    np.cumsum([length // 4 for _, length in pieces], out=offsets[1:])
    if len(pieces) == 1:  # one checkpoint a row group (above 4 MiB): no copy at all
        return np.frombuffer(chunk, "<f4", count=int(offsets[-1]), offset=pieces[0][0]), offsets
    return np.concatenate([np.frombuffer(chunk, "<f4", count=n // 4, offset=a)
                           for a, n in pieces] or [np.zeros(0, "<f4")]), offsets
