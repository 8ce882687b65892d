"""The zoo-folder format's one home, shared by the writers (generators, analysis.interop) and
the readers (loaders, analysis).

Modules: `names` (fixed paths, format version, atomic writes), `manifest`, `record` (zoo.json),
`layouts`, `documents` (zoo.json and README.md under the manifest), `schema` (table columns),
`writer` (Parquet and HDF5 shards), `reader` (opens nothing outside the folder).
"""
