"""A small Vision Transformer: patch embedding, cls token, pre-norm encoder blocks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.architectures.base import Family, check_divisible, integer_arg, shape_error
from zoo.datasets.base import DataInfo
from zoo.errors import SpecError


class ViT(nn.Module):
    """Patches -> [cls] + positions -> `depth` pre-norm blocks -> LayerNorm -> Linear on cls.

    The cls token and position embeddings start from N(0, 0.02^2) truncated at +-2 (the usual
    ViT choice); the patch conv and encoder layers keep PyTorch's default init. Dropout is 0.

    Args:
        image_shape: (C, H, W) of one sample; H and W must be multiples of patch_size.
        width: model dimension.
        num_classes: outputs of the Linear head.
        patch_size, depth, heads, mlp_ratio: see the family's arguments.
    """

    def __init__(self, image_shape: tuple[int, ...], width: int, num_classes: int, *,
                 patch_size: int, depth: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        channels, height, breadth = image_shape
        self.patch_embed = nn.Conv2d(channels, width, patch_size, stride=patch_size)
        patches = (height // patch_size) * (breadth // patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, patches + 1, width))
        nn.init.trunc_normal_(self.cls_token, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        # separate layers, not nn.TransformerEncoder, which deep-copies one layer's initial weights
        self.blocks = nn.Sequential(*(
            nn.TransformerEncoderLayer(width, heads, mlp_ratio * width, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, patches, width)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def make_vit(width: int, info: DataInfo, args: dict[str, Any]) -> nn.Module:
    """Check the image shape, patch size and heads, then build a ViT."""
    if len(info.input_shape) != 3:
        raise shape_error("vit", info, "(C, H, W) images")
    patch = args["patch_size"]
    if any(side % patch for side in info.input_shape[1:]):
        raise SpecError(f"architecture.args.patch_size: {patch} does not divide the image sides "
                        f"{info.input_shape[1:]}; expected a common divisor of them")
    check_divisible(width, args["heads"])
    return ViT(info.input_shape, width, info.num_outputs, **args)


FAMILIES = {
    "vit": Family("vit", "classification",
                  {"patch_size": integer_arg(4, 1), "depth": integer_arg(2, 1),
                   "heads": integer_arg(2, 1), "mlp_ratio": integer_arg(2, 1)},
                  make_vit),
}
