"""A permutation-equivariant network (NP-NFN) on `layers`, predicting test accuracy.

    python examples/nfn_layers.py ZOO_FOLDER [--epochs 20]

NFN-safe batching: every batch holds rows of one layout (loaders.LayoutBatchSampler), so no
padding enters the network. loaders.pad_collate would add zero hidden units, which shift an
NFN's mean-pooled outputs (by more than the spread between models on a small zoo).
"""

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader

from analysis.benchmark.npnfn import NPNFN
from loaders import LayoutBatchSampler, ZooDataset


def nfn_input(batch: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """ZooDataset's layers (W (B, 1, out, in, *kernel), b (B, 1, out)) as NPNFN input: the
    kernel's values become the weight's channels, (B, kernel values, out, in)."""
    layers = []
    for weight, bias in batch["weights"]:
        weight = weight[:, 0].reshape(*weight.shape[:1], *weight.shape[2:4], -1)
        layers.append((weight.permute(0, 3, 1, 2), bias))
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", help="a zoo folder")
    parser.add_argument("--epochs", type=int, default=20, help="passes over the train split")
    args = parser.parse_args()
    torch.manual_seed(0)
    train = ZooDataset(args.zoo, split="train", epochs="all", representation="layers",
                       targets=["test_accuracy"])
    print(train)
    sampler = LayoutBatchSampler(train, batch_size=8, shuffle=True, seed=0)
    loader = DataLoader(train, batch_sampler=sampler)
    first = nfn_input(next(iter(loader)))
    print("layer shapes of one batch:", [tuple(w.shape) for w, _ in first])
    model = NPNFN([w.shape[1] for w, _ in first], outputs=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            loss = nn.functional.mse_loss(model(nfn_input(batch)), batch["targets"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    print(f"train MSE after {args.epochs} epochs: {loss.item():.4f}")


if __name__ == "__main__":
    main()
