"""CLIP-style contrastive fusion: per-modality projections into a shared space, symmetric
InfoNCE between modalities, learned temperature (logit scale)."""
from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F

from mmedge.fusion.base import Features, FusionHead, register_fusion_head

MAX_LOGIT_SCALE = 100.0


def info_nce(za: torch.Tensor, zb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of L2-normalized (B, d) embeddings; row i of ``za`` matches row i of ``zb``."""
    logits = scale * za @ zb.t()  # (B, B)
    target = torch.arange(za.shape[0], device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@register_fusion_head("contrastive")
class ContrastiveHead(FusionHead):
    """CLIP-style head.

    Classification: logits = ``scale * cos(mean_m z_m, prototype_c)`` against learned class
    prototypes. Matching (``task="matching"``, two modalities, classes no_match/match):
    logits = ``[0, scale * cos(z_1, z_2) + bias]``, so softmax gives ``sigmoid(s cos + b)``.
    Training adds symmetric InfoNCE between every pair of modalities (on matching pairs).

    Args:
        info_nce_weight: Weight of the InfoNCE term.
    """

    def __init__(self, *, info_nce_weight: float = 0.5, **cfg) -> None:
        super().__init__(**cfg)
        self.info_nce_weight = info_nce_weight
        d = self.hidden
        self.proj = nn.ModuleDict({
            m: nn.Sequential(nn.LayerNorm(self.dims[m]), nn.Linear(self.dims[m], d), nn.GELU(), nn.Dropout(self.dropout_p), nn.Linear(d, d))
            for m in self.modalities
        })
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if self.task == "matching":
            self.bias = nn.Parameter(torch.tensor(-5.0))
        else:
            self.prototypes = nn.Parameter(torch.randn(self.num_classes, d) / math.sqrt(d))

    def scale(self) -> torch.Tensor:
        """The learned logit scale (1 / temperature), clamped to 100 as in CLIP."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def embed(self, feats: Features) -> dict[str, torch.Tensor]:
        """L2-normalized (B, hidden) embedding of every modality."""
        return {m: F.normalize(self.proj[m](feats[f"{m}_pooled"]), dim=-1) for m in self.modalities}

    def forward(self, feats: Features) -> torch.Tensor:
        z = self.embed(feats)
        if self.task == "matching":
            m1, m2 = self.modalities[:2]
            s = self.scale() * (z[m1] * z[m2]).sum(-1, keepdim=True) + self.bias  # (B, 1)
            return torch.cat([torch.zeros_like(s), s], dim=-1)  # (B, 2)
        fused = F.normalize(torch.stack(list(z.values())).mean(0), dim=-1)  # (B, d)
        return self.scale() * fused @ F.normalize(self.prototypes, dim=-1).t()  # (B, C)

    def extra_loss(self, feats: Features, y: torch.Tensor) -> torch.Tensor | None:
        z = self.embed(feats)
        keep = y == 1 if self.task == "matching" else torch.ones_like(y, dtype=torch.bool)
        if int(keep.sum()) < 2:
            return None
        losses = [info_nce(z[a][keep], z[b][keep], self.scale()) for a, b in itertools.combinations(self.modalities, 2)]
        return self.info_nce_weight * torch.stack(losses).mean() if losses else None
