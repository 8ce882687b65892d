"""A small permutation-equivariant network on NFN layers (after Zhou et al.'s NP-NFN, 2023).

Each layer i holds W_i (batch, channels, out, in) and b_i (batch, channels, out). An
equivariant layer adds to a per-entry channel map of W_i the maps of its row means, column
means and overall mean, of b_i, and of the neighbouring layers' means over the units they
share (the columns of W_{i+1} are the rows of W_i); every pooling is a mean, so the network
reads zoos of several widths. The invariant head pools every layer to its means and maps them
to the output. Permuting the hidden units of an input leaves the output unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from analysis.benchmark.data import LayerBatch


class Equivariant(nn.Module):
    """One equivariant map from `channels_in` to `channels_out` channels for every layer."""

    def __init__(self, layers: int, channels_in: int, channels_out: int) -> None:
        super().__init__()
        c, h = channels_in, channels_out
        self.weight = nn.ModuleList(nn.Linear(c, h) for _ in range(layers))
        self.bias = nn.ModuleList(nn.Linear(c, h) for _ in range(layers))
        self.rows = nn.ModuleList(nn.Linear(3 * c, h, bias=False) for _ in range(layers))
        self.columns = nn.ModuleList(nn.Linear(3 * c, h, bias=False) for _ in range(layers))
        self.means = nn.ModuleList(nn.Linear(2 * c, 2 * h, bias=False) for _ in range(layers))

    def forward(self, layers: LayerBatch) -> LayerBatch:
        out = []
        for i, (w, b) in enumerate(layers):
            rows = [b, w.mean(-1), _shared(layers, i + 1, w.shape[-2], lambda v, u: v.mean(-2))]
            columns = [w.mean(-2), *(_shared(layers, i - 1, w.shape[-1], pick)
                                     for pick in (lambda v, u: v.mean(-1), lambda v, u: u))]
            row = _channels(self.rows[i], torch.cat(rows, 1))  # (B, h, out)
            column = _channels(self.columns[i], torch.cat(columns, 1))  # (B, h, in)
            mean_w, mean_b = _channels(self.means[i], torch.cat(
                [w.mean((-2, -1)), b.mean(-1)], 1)).chunk(2, dim=1)  # (B, h) each
            w = (_channels(self.weight[i], w) + row[..., None] + column[..., None, :]
                 + mean_w[..., None, None])
            b = _channels(self.bias[i], b) + row + mean_b[..., None]
            out.append((torch.relu(w), torch.relu(b)))
        return out


def _shared(layers: LayerBatch, j: int, units: int, pick) -> torch.Tensor:
    """A vector over the `units` that layer j shares with its neighbour (zeros when j is out
    of range or its shape does not line up): pick(weight, bias) of layer j."""
    w, b = layers[min(max(j, 0), len(layers) - 1)]
    value = pick(w, b)
    reference = layers[0][1]
    if 0 <= j < len(layers) and value.shape[-1] == units:
        return value
    return reference.new_zeros(reference.shape[0], value.shape[1], units)


def _channels(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`linear` over axis 1 (channels) of x (batch, channels, ...)."""
    return linear(x.movedim(1, -1)).movedim(-1, 1)


class NPNFN(nn.Module):
    """Per-layer embeddings, `depth` equivariant layers, and an invariant mean-pooling head."""

    def __init__(self, channels: Sequence[int], outputs: int, hidden: int = 8,
                 depth: int = 1) -> None:
        super().__init__()
        self.embed_w = nn.ModuleList(nn.Linear(c, hidden) for c in channels)
        self.embed_b = nn.ModuleList(nn.Linear(1, hidden) for _ in channels)
        self.blocks = nn.ModuleList(Equivariant(len(channels), hidden, hidden)
                                    for _ in range(depth))
        self.head = nn.Sequential(nn.Linear(2 * hidden * len(channels), 32), nn.ReLU(),
                                  nn.Linear(32, outputs))

    def forward(self, layers: LayerBatch) -> torch.Tensor:
        x = [(_channels(ew, w), _channels(eb, b))
             for (w, b), ew, eb in zip(layers, self.embed_w, self.embed_b)]
        for block in self.blocks:
            x = block(x)
        pooled = [t for w, b in x for t in (w.mean((-2, -1)), b.mean(-1))]
        return self.head(torch.cat(pooled, 1))
