"""SANE-style tokens: random windows of neuron tokens from every width, a tiny masked autoencoder.

    python examples/sane_tokens.py ZOO_FOLDER [--epochs 2]
"""

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader

from loaders import Augment, ZooDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", help="a zoo folder")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the train split")
    parser.add_argument("--window", type=int, default=16, help="tokens per window (SANE)")
    args = parser.parse_args()
    torch.manual_seed(0)
    train = ZooDataset(args.zoo, split="train", epochs="all", representation="tokens",
                       token_size=32, window=args.window, augment=Augment(permute=True))
    print(train)
    loader = DataLoader(train, batch_size=8, shuffle=True)  # windows stack across widths
    encoder = nn.Sequential(nn.Linear(32 + 3, 64), nn.GELU(), nn.Linear(64, 32))
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        train.set_epoch(epoch)  # fresh permutations and windows
        for batch in loader:
            tokens, mask = batch["weights"], batch["mask"]
            hidden = torch.cat([tokens * (torch.rand_like(tokens) > 0.15),
                                batch["positions"].float() / 100], dim=-1)
            loss = ((encoder(hidden) - tokens)[mask] ** 2).mean()  # padding does not count
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: reconstruction loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
