"""NFN-style layers: padded (weight, bias) per layer across widths, predicting test accuracy.

    python examples/nfn_layers.py ZOO_FOLDER [--epochs 20]
"""

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader

from loaders import ZooDataset, pad_collate


def invariant_features(batch: dict) -> torch.Tensor:
    """Per layer, means of |W| and b over real entries only: unchanged by hidden-unit
    permutations and by the zero padding (a minimal NFN-like invariant)."""
    parts = []
    for (weight, bias), (weight_mask, bias_mask) in zip(batch["weights"], batch["masks"]):
        rows = weight.flatten(1).abs().sum(1) / weight_mask.flatten(1).sum(1)
        parts += [rows, bias.flatten(1).sum(1) / bias_mask.flatten(1).sum(1)]
    return torch.stack(parts, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", help="a zoo folder")
    parser.add_argument("--epochs", type=int, default=20, help="passes over the train split")
    args = parser.parse_args()
    torch.manual_seed(0)
    train = ZooDataset(args.zoo, split="train", epochs="all", representation="layers",
                       targets=["test_accuracy"])
    print(train)
    loader = DataLoader(train, batch_size=8, shuffle=True, collate_fn=pad_collate)
    first = next(iter(loader))
    print("padded layer shapes:", [tuple(w.shape) for w, _ in first["weights"]])
    head = nn.Linear(invariant_features(first).shape[1], 1)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for epoch in range(args.epochs):
        for batch in loader:
            loss = nn.functional.mse_loss(head(invariant_features(batch)), batch["targets"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    print(f"train MSE after {args.epochs} epochs: {loss.item():.4f}")


if __name__ == "__main__":
    main()
