"""Concatenation fusion: ``[h_img; h_txt; h_aud] -> MLP``."""
from __future__ import annotations

import torch
from torch import nn

from mmedge.fusion.base import Features, FusionHead, mlp, register_fusion_head


@register_fusion_head("concat")
class ConcatHead(FusionHead):
    """Concatenates the pooled vectors (each LayerNorm'd) and classifies with an MLP.

    With a single modality this is the single-modality baseline head.
    """

    def __init__(self, **cfg) -> None:
        super().__init__(**cfg)
        self.norms = nn.ModuleDict({m: nn.LayerNorm(self.dims[m]) for m in self.modalities})
        total = sum(self.dims.values())
        self.classifier = mlp(total, self.hidden, self.num_classes, self.dropout_p)

    def forward(self, feats: Features) -> torch.Tensor:
        h = torch.cat([self.norms[m](feats[f"{m}_pooled"]) for m in self.modalities], dim=-1)  # (B, sum D)
        return self.classifier(h)  # (B, C)
