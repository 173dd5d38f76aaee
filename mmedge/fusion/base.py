"""Fusion head interface and registry.

A fusion head maps encoder features to class logits. Features arrive as a flat dict
keyed ``"{modality}_{pooled|seq|mask}"`` (the encoders' output names), so a head is
also a self-contained ONNX graph whose inputs are exactly the names it declares.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from mmedge.errors import ConfigError
from mmedge.registry import Registry

FUSION_HEADS: Registry[Callable[..., "FusionHead"]] = Registry("fusion head")
Features = Mapping[str, torch.Tensor]


class FusionHead(nn.Module):
    """Base class: validates the modalities and declares which features it reads.

    Args:
        modalities: The modalities fused (one, two or three of image/text/audio).
        dims: Feature size D of each modality's encoder.
        num_classes: Number of output logits.
        hidden: Width of the fused representation.
        dropout: Dropout before the classifier.
        task: "classification" or "matching" (classes no_match / match).
    """

    uses: tuple[str, ...] = ("pooled",)
    min_modalities = 1

    def __init__(
        self, *, modalities: Sequence[str], dims: Mapping[str, int], num_classes: int,
        hidden: int = 256, dropout: float = 0.1, task: str = "classification",
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        _check_modalities(type(self).__name__, self.modalities, dims, self.min_modalities)
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        self.dims = {m: int(dims[m]) for m in self.modalities}
        self.num_classes, self.hidden, self.dropout_p, self.task = num_classes, hidden, dropout, task

    def input_names(self) -> tuple[str, ...]:
        """Feature names this head reads, e.g. ("image_pooled", "text_pooled")."""
        return tuple(f"{m}_{u}" for m in self.modalities for u in self.uses)

    def forward(self, feats: Features) -> torch.Tensor:  # (B, C)
        raise NotImplementedError

    def extra_loss(self, feats: Features, y: torch.Tensor) -> torch.Tensor | None:
        """An auxiliary training loss (contrastive heads); None for most heads."""
        return None


def _check_modalities(name: str, modalities: tuple[str, ...], dims: Mapping[str, int], minimum: int) -> None:
    from mmedge.runtime.modalities import modality_names

    unknown = [m for m in modalities if m not in modality_names()]
    if unknown:
        raise ConfigError(f"{name}: unknown modalities {unknown}; valid: {list(modality_names())}")
    if len(set(modalities)) != len(modalities) or not (minimum <= len(modalities) <= 3):
        raise ConfigError(f"{name} needs {minimum} to 3 distinct modalities, got {list(modalities)}")
    missing = [m for m in modalities if m not in dims]
    if missing:
        raise ConfigError(f"{name}: no encoder feature size for {missing}; the recipe lacks those modalities")


def mlp(cin: int, hidden: int, cout: int, dropout: float) -> nn.Sequential:
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear."""
    return nn.Sequential(nn.LayerNorm(cin), nn.Linear(cin, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, cout))


def register_fusion_head(name: str) -> Callable[[Any], Any]:
    """Registers a fusion head class under ``name``; a duplicate name is an error."""
    return FUSION_HEADS.register(name)


def create_fusion_head(name: str, **cfg: Any) -> FusionHead:
    """Builds the fusion head registered as ``name`` with keyword config ``cfg``."""
    return FUSION_HEADS.get(name)(**cfg)


def list_fusion_heads() -> list[str]:
    """Names of all registered fusion heads."""
    return FUSION_HEADS.names()
