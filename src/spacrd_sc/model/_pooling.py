"""Pooled outputs of backbones whose published embedding is not what the timm model returns."""

from __future__ import annotations

import torch
from torch import nn


class ClsMeanPatchTokens(nn.Module):
    """Class token ⊕ mean of the patch tokens of a timm ViT (register tokens excluded): ``(n, 2 × width)``.

    The embedding Virchow2's model card prescribes. ``vit`` is built with ``global_pool=""`` and its weights
    are loaded before wrapping, so the state dict keys stay those of the timm model (``vit.`` prefixed here).
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.num_features = 2 * int(vit.embed_dim)

    @property
    def patch_embed(self) -> nn.Module:
        return self.vit.patch_embed

    @property
    def dynamic_img_size(self) -> bool:
        return bool(getattr(self.vit, "dynamic_img_size", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(x)  # (n, prefix + patches, width), after the final norm
        cls = tokens[:, 0]
        patches = tokens[:, self.num_prefix_tokens :].mean(dim=1)
        return torch.cat([cls, patches], dim=-1)
