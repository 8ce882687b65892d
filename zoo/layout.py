"""Parameter layouts: how a flat float32 weight vector maps back onto a state_dict."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from zoo.spec import short_hash


@dataclass(frozen=True)
class Entry:
    """One state_dict entry: its name, shape, dtype and place in the flat vector."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    size: int


@dataclass(frozen=True)
class Layout:
    """Names, shapes and offsets of every parameter and buffer of one architecture and width."""

    key: str
    family: str
    width: int
    args: Mapping[str, Any]
    entries: tuple[Entry, ...]

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    def to_json(self) -> str:
        """Sorted-key JSON of the layout (written to layouts/<key>.json)."""
        body = {"key": self.key, "family": self.family, "width": self.width,
                "args": dict(self.args), "size": self.size,
                "entries": [{"name": e.name, "shape": list(e.shape), "dtype": e.dtype,
                             "offset": e.offset, "size": e.size} for e in self.entries]}
        return json.dumps(body, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Layout:
        """Parse a layout written by `to_json` (see `from_body`)."""
        return cls.from_body(json.loads(text))

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Layout:
        """The layout of parsed JSON `body`, checking that names are distinct, shapes are
        non-negative integers, offsets tile the vector and `size` is their sum (ValueError)."""
        entries, offset, names = [], 0, set()
        for raw in body["entries"]:
            shape = tuple(raw["shape"])
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                raise ValueError(f"layout {body.get('key')}: entry {raw['name']!r} has shape "
                                 f"{list(shape)}; expected non-negative integers")
            size = math.prod(shape)
            if raw["offset"] != offset or raw["size"] != size or raw["dtype"] not in DTYPES \
                    or not isinstance(raw["name"], str) or raw["name"] in names:
                raise ValueError(f"layout {body.get('key')}: entry {raw['name']!r} is malformed")
            names.add(raw["name"])
            entries.append(Entry(raw["name"], shape, raw["dtype"], offset, size))
            offset += size
        if body["size"] != offset:
            raise ValueError(f"layout {body.get('key')}: size {body['size']!r} differs from "
                             f"its entries' {offset}")
        if not isinstance(body["key"], str) or not isinstance(body["args"], dict) or \
                not isinstance(body["width"], int):
            raise ValueError(f"layout {body.get('key')!r}: key, width or args is malformed")
        return cls(body["key"], body["family"], body["width"], body["args"], tuple(entries))

    def flatten(self, state_dict: Mapping[str, torch.Tensor]) -> np.ndarray:
        """Concatenate a state_dict into one float32 vector in layout order."""
        parts = [state_dict[e.name].detach().cpu().reshape(-1).to(torch.float32).numpy()
                 for e in self.entries]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def unflatten(self, flat: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector back into a state_dict (integer buffers cast back exactly)."""
        flat = torch.as_tensor(flat)
        if flat.numel() != self.size:
            raise ValueError(f"layout {self.key}: expected {self.size} values, got {flat.numel()}")
        return {e.name: flat[e.offset:e.offset + e.size].reshape(e.shape).to(DTYPES[e.dtype])
                for e in self.entries}


DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}


def layout_of(model: torch.nn.Module, family: str, width: int,
              args: Mapping[str, Any]) -> Layout:
    """The layout of `model`'s state_dict; the key names family, width and an argument hash."""
    entries, offset = [], 0
    for name, tensor in model.state_dict().items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise ValueError(f"{name}: dtype {dtype} cannot be stored")
        entries.append(Entry(name, tuple(tensor.shape), dtype, offset, tensor.numel()))
        offset += tensor.numel()
    shape_hash = short_hash([[e.name, list(e.shape), e.dtype] for e in entries], 8)
    key = f"{family}-w{width}-{shape_hash}"
    return Layout(key, family, width, dict(args), tuple(entries))
