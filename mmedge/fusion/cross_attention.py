"""Cross-attention fusion, exactly the seed article's section 4.1:

``Q = H1 Wq``, ``K = H2 Wk``, ``A = softmax(Q K^T / sqrt(d))``, ``H1~ = A H2``, ``H2~ = A^T H1``.
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from mmedge.fusion.base import Features, FusionHead, mlp, register_fusion_head


def cross_attention(
    h1: torch.Tensor, h2: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor,
    mask1: torch.Tensor, mask2: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bidirectional cross-attention between two sequences.

    Args:
        h1: (B, N1, d) sequence of modality 1.
        h2: (B, N2, d) sequence of modality 2.
        wq, wk: (d, d) query / key matrices.
        mask1, mask2: (B, N1), (B, N2) float, 1 = valid position. Padded keys get zero
            weight and padded queries are left out of ``A^T H1``, so the result on valid
            positions equals the formulas on the unpadded sequences.

    Returns:
        ``A`` (B, N1, N2) with rows summing to 1, ``H1~ = A H2`` (B, N1, d),
        ``H2~ = A^T H1`` (B, N2, d).
    """
    d = h1.shape[-1]
    scores = (h1 @ wq) @ (h2 @ wk).transpose(1, 2) / math.sqrt(d)  # (B, N1, N2)
    scores = scores.masked_fill(mask2[:, None, :] < 0.5, -1e9)
    a = torch.softmax(scores, dim=-1)  # (B, N1, N2)
    h1_tilde = a @ h2  # (B, N1, d)
    h2_tilde = (a * mask1[:, :, None]).transpose(1, 2) @ h1  # (B, N2, d)
    return a, h1_tilde, h2_tilde


def pooled_cross_attention(
    h1: torch.Tensor, h2: torch.Tensor, wqk: torch.Tensor, mask1: torch.Tensor, mask2: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``masked_mean(H1~, mask1)`` and ``masked_mean(H2~, mask2)`` of :func:`cross_attention`.

    The same values without the (B, N, d) products, which is what the head runs in
    training and in its exported graph:

    - ``wqk = Wq Wk^T / sqrt(d)`` folds the two projections into one (d, d) matrix,
      applied on the keys' side: ``Q K^T / sqrt(d) = H1 (H2 wqk^T)^T`` (the pair's later
      modality: text or audio in the reference recipes, 13-32 positions, not the image's 64);
    - the means are taken on the attention weights first (matrix-vector products):
      ``mean_i (A H2)_i = (w1 A) H2`` and ``mean_j (A^T H1)_j = ((A w2^T) * mask1)^T H1``,
      with ``w = mask / |mask|`` the masked-mean weights.

    Returns:
        (B, d) pooled ``H1~`` and (B, d) pooled ``H2~``.
    """
    scores = h1 @ (h2 @ wqk.T).transpose(1, 2)  # (B, N1, N2)
    a = torch.softmax(scores.masked_fill(mask2[:, None, :] < 0.5, -1e9), dim=-1)
    w1, w2 = mean_weights(mask1), mean_weights(mask2)  # (B, 1, N)
    pooled1 = (w1 @ a) @ h2  # (B, 1, d)
    pooled2 = ((a @ w2.transpose(1, 2)) * mask1[:, :, None]).transpose(1, 2) @ h1  # (B, 1, d)
    return pooled1.squeeze(1), pooled2.squeeze(1)


def mean_weights(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, N) weights of the mean over valid positions of ``mask`` (B, N): ``w @ x`` is the
    masked mean of ``x`` (B, N, d), as (B, 1, d)."""
    return (mask / mask.sum(1, keepdim=True).clamp_min(1.0))[:, None, :]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, N, d) over valid positions of ``mask`` (B, N) -> (B, d)."""
    return (mean_weights(mask) @ x).squeeze(1)


@register_fusion_head("cross_attention")
class CrossAttentionHead(FusionHead):
    """Cross-attention over token/patch/frame sequences for every pair of modalities.

    Each modality's sequence is projected to ``hidden`` (H_m = LN(seq) W_m). For each pair
    (m1, m2): ``A``, ``H1~``, ``H2~`` as above, mean-pooled over valid positions. The
    classifier sees the pooled ``H1~``, ``H2~`` of every pair and the pooled ``H_m``.
    ``forward`` computes those means directly (:func:`pooled_cross_attention`, a smaller and faster
    exported graph: ``benchmarks/heads_cold.py`` times it); :meth:`attend` gives ``A``, ``H1~``,
    ``H2~`` themselves.
    """

    uses = ("seq", "mask")
    min_modalities = 2

    def __init__(self, **cfg) -> None:
        super().__init__(**cfg)
        d = self.hidden
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(self.dims[m]), nn.Linear(self.dims[m], d)) for m in self.modalities})
        self.pairs = list(itertools.combinations(self.modalities, 2))
        self.wq = nn.ParameterList([nn.Parameter(torch.randn(d, d) / math.sqrt(d)) for _ in self.pairs])
        self.wk = nn.ParameterList([nn.Parameter(torch.randn(d, d) / math.sqrt(d)) for _ in self.pairs])
        width = d * (2 * len(self.pairs) + len(self.modalities))
        self.classifier = mlp(width, d, self.num_classes, self.dropout_p)

    def attend(self, feats: Features) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(A, H1~, H2~) for every pair, in ``self.pairs`` order."""
        h = self._projected(feats)
        return [
            cross_attention(h[m1], h[m2], self.wq[i], self.wk[i], feats[f"{m1}_mask"], feats[f"{m2}_mask"])
            for i, (m1, m2) in enumerate(self.pairs)
        ]

    def _projected(self, feats: Features) -> dict[str, torch.Tensor]:
        """``H_m = LN(seq_m) W_m``, (B, N_m, d), per modality."""
        return {m: self.proj[m](feats[f"{m}_seq"]) for m in self.modalities}

    def forward(self, feats: Features) -> torch.Tensor:
        h = self._projected(feats)
        scale = 1.0 / math.sqrt(self.hidden)
        parts = []
        for i, (m1, m2) in enumerate(self.pairs):
            wqk = (self.wq[i] @ self.wk[i].T) * scale  # a constant of the exported graph
            parts += pooled_cross_attention(h[m1], h[m2], wqk, feats[f"{m1}_mask"], feats[f"{m2}_mask"])
        parts += [masked_mean(h[m], feats[f"{m}_mask"]) for m in self.modalities]
        return self.classifier(torch.cat(parts, dim=-1))  # (B, C)
