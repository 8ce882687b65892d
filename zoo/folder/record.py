"""zoo.json as a typed record: the resolved spec, its hashes, versions and the data's shape facts.

A reader rebuilds any stored model from this record alone; it never needs the training data.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from zoo.datasets.base import DataInfo, Normalization
from zoo.errors import ZooFolderError
from zoo.folder.names import (FORMAT_VERSION, READABLE_VERSIONS, ZOO_JSON, read_json,
                              write_atomically)

MAX_INPUT_SIZE = 1 << 26  # values in one sample, outputs of a model: a bound a reader trusts


@dataclass(frozen=True)
class ZooRecord:
    """What zoo.json holds.

    Args:
        spec: the resolved spec as `ZooSpec.to_dict()` gives it.
        spec_hash: `ZooSpec.spec_hash()` of that spec.
        data_fingerprint: sha256 of the training and test tensors (`DataBundle.fingerprint`).
        versions: code and library versions that produced the zoo.
        data_info: the data set's shape facts (task, input shape, outputs).
        imported_from: for an imported zoo, its source format, folder and trial count.
        normalization: per-channel input statistics of an image data set (None: raw inputs),
            so a reader feeds a loaded model inputs as it was trained on them.
        precision: the training precision and torch's float32 flags (TF32) of the run.
    """

    spec: Mapping[str, Any]
    spec_hash: str
    data_fingerprint: str
    versions: Mapping[str, str]
    data_info: DataInfo
    imported_from: Mapping[str, Any] | None = None
    normalization: Normalization | None = None
    precision: Mapping[str, Any] | None = None

    def to_json(self) -> str:
        """Sorted-key JSON, with the format version."""
        info = self.data_info
        body = {"format_version": FORMAT_VERSION, "spec": dict(self.spec),
                "spec_hash": self.spec_hash, "data_fingerprint": self.data_fingerprint,
                "versions": dict(self.versions),
                "data_info": {"task": info.task, "input_shape": list(info.input_shape),
                              "num_outputs": info.num_outputs}}
        if self.imported_from is not None:
            body["imported_from"] = dict(self.imported_from)
        if self.normalization is not None:
            body["data_normalization"] = self.normalization.to_dict()
        if self.precision is not None:
            body["precision"] = dict(self.precision)
        return json.dumps(body, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = ZOO_JSON) -> ZooRecord:
        """Parse zoo.json; `source` names the file in errors."""
        try:
            body = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise ZooFolderError(f"{source}: not a zoo.json this version can read ({error})") \
                from None
        return cls.from_body(body, source)

    @classmethod
    def from_body(cls, body: Any, source: str = ZOO_JSON) -> ZooRecord:
        """The record of zoo.json's parsed JSON `body`; `source` names the file in errors."""
        try:
            if not isinstance(body, dict):
                raise ValueError("expected a mapping with a spec")
            _check_spec(body)
            if body.get("format_version") not in READABLE_VERSIONS:
                raise ZooFolderError(f"{source}: format version {body.get('format_version')!r}"
                                     f" is not supported (expected one of {READABLE_VERSIONS})")
            raw = body["data_info"]
            info = DataInfo(raw["task"], tuple(int(n) for n in raw["input_shape"]),
                            int(raw["num_outputs"]))
            if not info.input_shape or min(info.input_shape) < 1 or \
                    math.prod(info.input_shape) > MAX_INPUT_SIZE or not \
                    1 <= info.num_outputs <= MAX_INPUT_SIZE:
                raise ValueError(f"data_info {raw!r} has a size out of range (each input "
                                 f"dimension >= 1, at most {MAX_INPUT_SIZE} inputs and outputs)")
            raw = body.get("data_normalization")
            normalization = None if raw is None else Normalization(
                tuple(float(v) for v in raw["mean"]), tuple(float(v) for v in raw["std"]))
            return cls(body["spec"], body["spec_hash"], body["data_fingerprint"],
                       body["versions"], info, body.get("imported_from"), normalization,
                       body.get("precision"))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
            raise ZooFolderError(f"{source}: not a zoo.json this version can read ({error})") \
                from None


def _check_spec(body: dict[str, Any]) -> None:
    """The keys a plan and a reader rely on, with their types (raises ValueError)."""
    for key in ("spec_hash", "data_fingerprint"):
        if not isinstance(body.get(key), str):
            raise ValueError(f"{key} is missing or not a string")
    spec = body.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("seeds"), list) or not all(
            isinstance(spec.get(axis), dict) and isinstance(spec[axis].get("values"), list)
            for axis in ("load_axis", "temperature_axis")):
        raise ValueError("spec, its seeds or a grid axis' values are missing")


def versions() -> dict[str, str]:
    """Versions of the code and libraries that produce a zoo."""
    import pyarrow
    import ray
    import torch

    import zoo

    return {"phase_zoo": zoo.__version__, "torch": torch.__version__, "ray": ray.__version__,
            "pyarrow": pyarrow.__version__, "python": platform.python_version()}


def write_record(root: Path, record: ZooRecord) -> None:
    """Replace zoo.json atomically."""
    write_atomically(Path(root) / ZOO_JSON, record.to_json().encode())


def read_record(root: Path) -> ZooRecord | None:
    """The zoo's record, or None when the folder has no zoo.json."""
    path = Path(root) / ZOO_JSON
    if not path.exists() and not path.is_symlink():
        return None
    body = read_json(path, "zoo.json")
    return ZooRecord.from_body(body, str(path))
