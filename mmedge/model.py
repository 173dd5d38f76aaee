"""The trained multimodal ensemble as one PyTorch module: shared encoders + member heads."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mmedge.config import Recipe
from mmedge.encoders import Encoder
from mmedge.fusion import FusionHead, create_fusion_head
from mmedge.runtime.ensemble import combine


def build_head(member, recipe: Recipe, dims: Mapping[str, int], num_classes: int) -> FusionHead:
    """The fusion head of ``member`` (a ``MemberConfig``), freshly initialized from its seed."""
    torch.manual_seed(member.seed)
    return create_fusion_head(
        member.head, modalities=member.modalities, dims=dims, num_classes=num_classes,
        hidden=member.hidden, dropout=member.dropout, task=recipe.task,
    )


class MultimodalEnsemble(nn.Module):
    """Shared frozen encoders, K fusion heads, and the fitted ensemble rule.

    Args:
        recipe: The recipe the ensemble was trained from.
        encoders: modality -> encoder (each run once per call, shared by the heads).
        heads: member name -> fusion head.
        temperatures: Per-member temperature (calibration), in ``recipe.members`` order.
        weights: Per-member ensemble weights, same order.
    """

    def __init__(
        self, recipe: Recipe, encoders: Mapping[str, Encoder], heads: Mapping[str, FusionHead],
        temperatures: Sequence[float], weights: Sequence[float],
    ) -> None:
        super().__init__()
        self.recipe = recipe
        self.encoders = nn.ModuleDict(dict(encoders))
        self.heads = nn.ModuleDict(dict(heads))
        self.temperatures = list(map(float, temperatures))
        self.weights = list(map(float, weights))

    def features(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Runs each encoder once: preprocessed inputs -> ``{modality}_{pooled,seq,mask}``."""
        feats: dict[str, torch.Tensor] = {}
        for enc in self.encoders.values():
            outs = enc(*[inputs[n] for n in enc.input_names])
            feats.update(zip(enc.output_names(), outs))
        return feats

    @torch.no_grad()
    def member_logits(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits (B, C) of every member."""
        feats = self.features(inputs)
        return {name: head(feats) for name, head in self.heads.items()}

    def predict_proba(self, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        """Ensemble probabilities (B, C) with the recipe's combination rule."""
        logits = [v.numpy() for v in self.member_logits(inputs).values()]
        return combine(logits, method=self.recipe.ensemble, weights=self.weights, temperatures=self.temperatures)

