"""The trained multimodal ensemble as one PyTorch module: shared encoders + member heads."""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mmedge.config import Recipe
from mmedge.encoders import Encoder
from mmedge.fusion import FusionHead, create_fusion_head
from mmedge.runtime.ensemble import EnsembleMethod, Stacking, combine, parse_method, softmax


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
        method: The combination rule training fit (default: the recipe's ``ensemble``).
        stacking: The ``stacking`` rule's model.
    """

    def __init__(
        self, recipe: Recipe, encoders: Mapping[str, Encoder], heads: Mapping[str, FusionHead],
        temperatures: Sequence[float], weights: Sequence[float], *,
        method: EnsembleMethod | str | None = None, stacking: Stacking | None = None,
    ) -> None:
        super().__init__()
        self.recipe = recipe
        self.encoders = nn.ModuleDict(dict(encoders))
        self.heads = nn.ModuleDict(dict(heads))
        self.temperatures = list(map(float, temperatures))
        self.weights = list(map(float, weights))
        self.method = parse_method(method or recipe.ensemble)
        self.stacking = stacking

    def features(self, inputs: Mapping[str, torch.Tensor], *,
                 timings: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        """Runs each encoder once: preprocessed inputs -> ``{modality}_{pooled,seq,mask}``.

        Args:
            inputs: Preprocessed encoder inputs by name (``pixel_values``, ``input_ids``...).
            timings: If given, receives ``encoder.<modality>`` milliseconds.
        """
        feats: dict[str, torch.Tensor] = {}
        used = self.used_modalities()
        for modality, enc in self.encoders.items():
            if modality not in used and not all(n in inputs for n in enc.input_names):
                continue  # a tower no member reads (a zero-shot bundle's text tower), not given
            start = time.perf_counter()
            outs = enc(*[inputs[n] for n in enc.input_names])
            feats.update(zip(enc.output_names(), outs))
            _record(timings, f"encoder.{modality}", start)
        return feats

    def used_modalities(self) -> tuple[str, ...]:
        """The modalities some member reads (a pretrained text tower kept for similarity may be unused)."""
        return tuple(m for m in self.recipe.modalities if any(m in mb.modalities for mb in self.recipe.members))

    @torch.no_grad()
    def member_logits(self, inputs: Mapping[str, torch.Tensor], *,
                      timings: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        """Logits (B, C) of every member; ``timings`` (if given) gets encoder and ``head.<name>`` ms."""
        feats = self.features(inputs, timings=timings)
        logits = {}
        for name, head in self.heads.items():
            start = time.perf_counter()
            logits[name] = head(feats)
            _record(timings, f"head.{name}", start)
        return logits

    @torch.inference_mode()
    def predict(self, inputs: Mapping[str, torch.Tensor], *,
                timings: dict[str, float] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The reference forward: ensemble probabilities (B, C) and each member's calibrated ones.

        This is the one PyTorch forward of the ensemble that export's accuracy report, the
        bench's PyTorch baseline and the tests compare the runtime against.

        Args:
            inputs: Preprocessed encoder inputs by name.
            timings: If given, receives per-stage milliseconds (encoders, heads, ``ensemble``).
        """
        logits = {k: v.numpy() for k, v in self.member_logits(inputs, timings=timings).items()}
        start = time.perf_counter()
        probs = combine(list(logits.values()), method=self.method, weights=self.weights,
                        temperatures=self.temperatures, stacking=self.stacking)
        _record(timings, "ensemble", start)
        members = {n: softmax(lg, t) for (n, lg), t in zip(logits.items(), self.temperatures)}
        return probs, members

    def predict_proba(self, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        """Ensemble probabilities (B, C) with the recipe's combination rule."""
        return self.predict(inputs)[0]


def _record(timings: dict[str, float] | None, stage: str, start: float) -> None:
    if timings is not None:
        timings[stage] = (time.perf_counter() - start) * 1000.0
