"""A small decoder-only GPT for next-token prediction."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.architectures.base import Family, check_divisible, integer_arg, shape_error
from zoo.datasets.base import DataInfo


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and earlier ones."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (t.reshape(batch, length, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(x).split(width, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with 4x GELU."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token + learned position embeddings -> `depth` causal blocks -> LayerNorm -> Linear.

    GPT-2 init: Linear and embedding weights N(0, 0.02^2), biases 0, and the two projections
    that write into the residual stream N(0, (0.02 / sqrt(2 depth))^2) so its variance stays
    put as depth grows. The head is untied from the token embedding. Dropout is 0.

    Args:
        vocab_size: tokens in the vocabulary (also the logits' last dimension).
        context: longest sequence the position table covers.
        width: model dimension (model_dim).
        depth: number of blocks.
        heads: attention heads; must divide width.
    """

    def __init__(self, vocab_size: int, context: int, width: int, depth: int, heads: int) -> None:
        super().__init__()
        self.tok_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                residual = name.endswith("attn.proj") or name.endswith("mlp.2")
                std = 0.02 / math.sqrt(2 * depth) if residual else 0.02
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) long token ids, T <= context -> (B, T, vocab_size) next-token logits."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok_embed(tokens) + self.pos_embed(positions)
        return self.head(self.norm(self.blocks(x)))


def make_gpt(width: int, info: DataInfo, args: dict[str, Any]) -> nn.Module:
    """Check the sequence shape and heads, then build a GPT over info's vocabulary."""
    if len(info.input_shape) != 1:
        raise shape_error("gpt", info, "(sequence_length,) token ids")
    check_divisible(width, args["heads"])
    return GPT(info.num_outputs, info.input_shape[0], width, args["depth"], args["heads"])


FAMILIES = {
    "gpt": Family("gpt", "language_model",
                  {"depth": integer_arg(2, 1), "heads": integer_arg(2, 1)}, make_gpt),
}
