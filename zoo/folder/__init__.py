"""The zoo-folder format's one home, shared by the writers (generators, analysis.interop) and
the readers (loaders, analysis).

Modules: `names` (fixed paths, format version, atomic writes), `manifest`, `record` (zoo.json),
`layouts`, `schema` (table columns), `writer` (Parquet and HDF5 shards), `reader`.
"""
