"""DWSNets input layout: tuples of weights (B, d_in, d_out, 1) and biases (B, d_out, 1) per layer.

DWSNets (Navon et al. 2023) take an MLP as (weights, biases) with a trailing feature axis and
weights stored input-major; batches hold one architecture, so the LayoutBatchSampler groups
rows by layout.

    python examples/dwsnets_layout.py ZOO_FOLDER
"""

import argparse

import torch
from torch.utils.data import DataLoader

from loaders import LayoutBatchSampler, ZooDataset


def to_dwsnets(batch: dict) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Our layers batch (W (B, 1, out, in), b (B, 1, out)) in DWSNets' (weights, biases)."""
    weights = tuple(w[:, 0].transpose(1, 2).unsqueeze(-1) for w, _ in batch["weights"])
    biases = tuple(b[:, 0].unsqueeze(-1) for _, b in batch["weights"])
    return weights, biases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", help="a zoo folder")
    args = parser.parse_args()
    ds = ZooDataset(args.zoo, split="all", representation="layers", targets=["test_accuracy"])
    print(ds)
    loader = DataLoader(ds, batch_sampler=LayoutBatchSampler(ds, batch_size=4))
    for batch in loader:
        weights, biases = to_dwsnets(batch)
        model = ds.load_model(ds.row_layouts.index(batch["layout"][0]))
        first = dict(model.named_parameters())
        assert weights[0].shape[1:3] == first[next(iter(first))].T.shape  # (d_in, d_out)
        print(batch["layout"][0], [tuple(w.shape) for w in weights],
              [tuple(b.shape) for b in biases])


if __name__ == "__main__":
    main()
