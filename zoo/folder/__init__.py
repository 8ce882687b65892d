"""The zoo-folder format's one home, shared by the writers (generators, analysis.interop) and
the readers (loaders, analysis). Each shard kind's writer and reader sit side by side.

Modules: `names` (the sub-layout named once, format version, bounded reads, atomic writes),
`zoofolder` (`ZooFolder`: the write side, every file operation confined to the folder),
`manifest`, `record` (zoo.json), `documents` (zoo.json and README.md under the manifest),
`layouts`, `schema` (table columns), `modelshards` (Parquet models and cell HDF5 shards:
writer and readers), `shardbytes` (the bound of a models file and the writer's estimates of
one's size), `rowgroups` (the models shards' row-group digests), `checkpoints` (per-model HDF5 files: writer and reader), `writer`
(`ZooWriter`: commits through the manifest), `reader` (`ZooReader`: opens nothing outside the
folder), `lock` (one writer per folder), `card` (README.md dataset card), `layoutstable`
(layouts.parquet, the card's `layouts` config), `splits` (cell splits).
A zoo on an object store: `location` (a location as a filesystem and a root), `storefolder`
(`StoreFolder`, the write side over a local scratch), `storestates` (training states on the
store), `storelock`, `cache` (the read side's
bounded local copy), `sync` (copies between locations), `outputs` (where plots and studies
go: the zoo's folder or prefix, or `--out`).
"""
