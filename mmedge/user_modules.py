"""Users' own ``nn.Module``s behind mmedge's encoder and fusion-head interfaces.

``ModuleEncoder`` wraps any module that takes one modality's preprocessed tensors and returns
its features: a tensor (the pooled vector), a tuple ``(pooled[, seq[, mask]])``, or a dict of
named tensors. Output names become ``{modality}_{name}`` (``image_pooled``...), as mmedge's own.
``ModuleHead`` wraps a head that maps the features it declares to logits (B, C); its
``forward`` takes them as one dict, or as keyword arguments named like them.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from mmedge.encoders.base import FEATURE_NAMES, Encoder
from mmedge.errors import ConfigError, ExportError

__all__ = ["ModuleEncoder", "ModuleHead", "qualname"]


def qualname(module: Any) -> str:
    """``package.module.Class`` of a module instance (recorded in manifests)."""
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _named(out: Any) -> tuple[tuple[str, ...], tuple[torch.Tensor, ...]]:
    if isinstance(out, torch.Tensor):
        return ("pooled",), (out,)
    if isinstance(out, Mapping):
        return tuple(str(k) for k in out), tuple(out.values())
    if isinstance(out, (tuple, list)) and 1 <= len(out) <= len(FEATURE_NAMES):
        return FEATURE_NAMES[: len(out)], tuple(out)
    raise ConfigError(f"an encoder returned {type(out).__name__}; return a tensor (pooled), a tuple "
                      f"(pooled, seq, mask) or a dict of named tensors")


class ModuleEncoder(Encoder):
    """A user's encoder module as an mmedge ``Encoder`` (frozen by the caller).

    Args:
        module: Takes the modality's preprocessed inputs, positionally in ``input_names`` order.
        modality: "image", "text" or "audio".
        input_names: The runtime's preprocessed inputs it takes (``pixel_values``;
            ``input_ids``, ``attention_mask``; ``mel`` or ``waveform``).

    Its output names are known after the first call (``describe`` runs one).
    """

    def __init__(self, module: nn.Module, *, modality: str, input_names: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.modality = modality
        self.input_names = tuple(input_names)
        self.pretrained_source = f"user module {qualname(module)}"
        self.features: tuple[str, ...] | None = None

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        names, values = _named(self.module(*inputs))
        if self.features is None:
            bad = [n for n in names if not n.isidentifier()]
            if bad or not all(isinstance(v, torch.Tensor) for v in values):
                raise ConfigError(f"{self.modality} encoder {qualname(self.module)}: outputs must be tensors "
                                  f"named by identifiers, got names {list(names)}")
            self.features, self.dim = names, int(values[0].shape[-1])
        return values

    def output_names(self) -> tuple[str, ...]:
        """``{modality}_{name}`` of every output, in the order ``forward`` returns them."""
        if self.features is None:
            raise ExportError(f"{self.modality} encoder {qualname(self.module)} has not run yet; its output names "
                              "are known after one call")
        return tuple(f"{self.modality}_{n}" for n in self.features)


def _takes_keywords(module: nn.Module, inputs: Sequence[str]) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return all(n in params for n in inputs)


class ModuleHead(nn.Module):
    """A user's fusion head with the features it reads declared.

    Args:
        module: Maps features to logits (B, C): ``forward(feats)`` with one dict, or
            ``forward(image_pooled=..., text_pooled=...)`` with parameters named like ``inputs``.
        inputs: Encoder output names it reads, e.g. ``("image_pooled", "text_pooled")``.
    """

    def __init__(self, module: nn.Module, inputs: Sequence[str]) -> None:
        super().__init__()
        if not inputs:
            raise ConfigError(f"head {qualname(module)} declares no inputs; name the encoder outputs it reads, "
                              "e.g. inputs=('image_pooled', 'text_pooled')")
        self.module = module
        self.inputs = tuple(inputs)
        self.keywords = _takes_keywords(module, self.inputs)

    def input_names(self) -> tuple[str, ...]:
        """The encoder outputs this head reads."""
        return self.inputs

    def forward(self, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        picked = {n: feats[n] for n in self.inputs}
        return self.module(**picked) if self.keywords else self.module(picked)  # (B, C)
