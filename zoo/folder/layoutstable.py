"""layouts.parquet: every layout's entries as a table (one row per state_dict entry), so that
`datasets.load_dataset(folder, "layouts")` gives the weight shapes that layouts/*.json hold.
`zoo card` writes it and the manifest covers it as a document."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from zoo.folder.reader import ZooReader

LAYOUTS_SCHEMA = pa.schema([
    ("layout", pa.string()), ("family", pa.string()), ("width", pa.int64()),
    ("args", pa.string()), ("name", pa.string()), ("shape", pa.list_(pa.int64())),
    ("dtype", pa.string()), ("offset", pa.int64()), ("size", pa.int64())])
LAYOUTS_COLUMNS = {
    "layout": "the layout key (the models table's `layout`)", "family": "architecture family",
    "width": "the model's width", "args": "the family's arguments, JSON",
    "name": "state_dict entry", "shape": "its shape", "dtype": "float32 or int64 (a counter)",
    "offset": "its first position in the flat `weights` vector", "size": "its values"}


def layouts_table(reader: ZooReader) -> pa.Table:
    """One row per entry of every layout the manifest lists, layouts by key, entries in
    layout order (each layout read through its sha256 check)."""
    rows = []
    for key in sorted(reader.manifest.layouts):
        layout = reader.layout(key)
        args = json.dumps(dict(layout.args), sort_keys=True)
        rows += [{"layout": key, "family": layout.family, "width": layout.width, "args": args,
                  "name": e.name, "shape": list(e.shape), "dtype": e.dtype,
                  "offset": e.offset, "size": e.size} for e in layout.entries]
    return pa.Table.from_pylist(rows, schema=LAYOUTS_SCHEMA)


def layouts_parquet(reader: ZooReader) -> bytes:
    """`layouts_table` as the bytes of one Parquet file."""
    sink = io.BytesIO()
    pq.write_table(layouts_table(reader), sink)
    return sink.getvalue()
