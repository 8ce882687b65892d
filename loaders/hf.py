"""A zoo as a Hugging Face dataset wherever it lives: `datasets.load_dataset` reads a local
folder by its README.md alone; for a zoo on an object store it needs the data files as URIs,
which its README.md's `configs:` give (checked against the manifest first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.errors import ZooFolderError
from zoo.folder.documents import readme_configs
from zoo.folder.names import README
from zoo.folder.reader import ZooReader


def hf_data_files(root: str | Path, config: str = "models") -> dict[str, list[str]]:
    """Split -> data files (URIs for a zoo on a store, paths for a folder) of the card's
    `config` ('models', 'cells', 'pairs'), for `datasets.load_dataset("parquet", ...)`."""
    reader = ZooReader(root)  # refuses a README.md whose configs leave the manifest's shards
    configs = {c.get("config_name"): c for c in readme_configs(reader.root / README)
               if isinstance(c, dict)}
    if config not in configs:
        raise ZooFolderError(f"{reader.location}/{README}: no config {config!r}; it has "
                             f"{sorted(map(str, configs))}")
    base = reader.location.rstrip("/")
    return {str(item["split"]): [f"{base}/{path}" for path in item["path"]]
            for item in configs[config]["data_files"]}


def load_hf_dataset(root: str | Path, config: str = "models",
                    storage_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """`datasets.load_dataset` of the zoo at `root` (a folder or a URI such as
    s3://bucket/prefix) for `config`; `storage_options` reach fsspec (endpoint, credentials),
    `kwargs` reach load_dataset (split, streaming, cache_dir, ...)."""
    import datasets

    return datasets.load_dataset("parquet", data_files=hf_data_files(root, config),
                                 storage_options=storage_options, **kwargs)
