"""Fusion heads registered by name: ``create_fusion_head("cross_attention", **cfg)``."""
from mmedge.fusion.base import FUSION_HEADS, FusionHead, create_fusion_head, list_fusion_heads, register_fusion_head
from mmedge.fusion import bilinear, concat, contrastive, cross_attention, zero_shot  # noqa: F401  (registers the heads)

__all__ = ["FUSION_HEADS", "FusionHead", "create_fusion_head", "list_fusion_heads", "register_fusion_head"]
