"""Low-rank factorized bilinear pooling (MFB): outer-product interactions without the d^2."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mmedge.fusion.base import Features, FusionHead, mlp, register_fusion_head


@register_fusion_head("bilinear")
class BilinearHead(FusionHead):
    """``z = SumPool_k( prod_m (U_m h_m) )`` with rank ``k``, then signed sqrt and L2 norm.

    For two modalities, ``z_o = sum_k (U_{ok} x) (V_{ok} y)`` equals ``x^T W_o y`` with the
    bilinear tensor ``W_o`` factorized as ``sum_k U_{ok}^T V_{ok}`` (rank k). With three
    modalities the product is a rank-k trilinear form.

    Args:
        rank: Factorization rank k.
    """

    min_modalities = 2

    def __init__(self, *, rank: int = 4, **cfg) -> None:
        super().__init__(**cfg)
        self.rank = rank
        self.proj = nn.ModuleDict({
            m: nn.Sequential(nn.LayerNorm(self.dims[m]), nn.Linear(self.dims[m], self.hidden * rank))
            for m in self.modalities
        })
        self.drop = nn.Dropout(self.dropout_p)
        self.classifier = mlp(self.hidden, self.hidden, self.num_classes, self.dropout_p)

    def fuse(self, feats: Features) -> torch.Tensor:
        """The pooled bilinear representation (B, hidden)."""
        z = None
        for m in self.modalities:
            p = self.proj[m](feats[f"{m}_pooled"])  # (B, hidden * rank)
            z = p if z is None else z * p
        z = self.drop(z).unflatten(-1, (self.hidden, self.rank)).sum(-1)  # (B, hidden)
        z = torch.sign(z) * torch.sqrt(torch.abs(z) + 1e-8)
        return F.normalize(z, dim=-1)

    def forward(self, feats: Features) -> torch.Tensor:
        return self.classifier(self.fuse(feats))  # (B, C)
