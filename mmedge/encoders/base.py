"""Encoder interface and registry.

An encoder maps one modality's preprocessed input to three tensors:
``pooled`` (B, D), ``seq`` (B, N, D) token/patch/frame sequence, and ``mask`` (B, N)
float (1 = valid position). Cross-attention heads need the sequences; the others use
the pooled vectors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mmedge.registry import Registry

ENCODERS: Registry[Callable[..., "Encoder"]] = Registry("encoder")
FEATURE_NAMES = ("pooled", "seq", "mask")


class Encoder(nn.Module):
    """Base class of every encoder.

    Attributes:
        modality: "image" | "text" | "audio".
        dim: Feature size D of ``pooled`` and ``seq``.
        input_names: Names of the preprocessed inputs ``forward`` takes, in order.
        pretrained_source: Where the weights come from (recorded in the checkpoint).
        trained_here: Trained by ``mmedge train`` on the recipe's data (not pretrained).
        train_augment: ``fn(inputs, generator) -> inputs``, the augmentation of its first input
            while it is trained here (None: none).
    """

    modality: str = ""
    dim: int = 0
    input_names: tuple[str, ...] = ()
    pretrained_source: str = ""
    trained_here: bool = False
    train_augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def split_for_finetune(self, blocks: int) -> tuple[Callable[..., torch.Tensor], nn.Module, Callable[[torch.Tensor], tuple]]:
        """Splits the encoder to fine-tune its last ``blocks`` blocks.

        Returns:
            ``trunk(*inputs) -> h`` (frozen part), the trainable ``tail`` module, and
            ``tail_forward(h) -> (pooled, seq, mask)``.
        """
        from mmedge.errors import ConfigError

        raise ConfigError(f"encoder {type(self).__name__} does not support unfreezing blocks; set unfreeze to 0 for it")

    def output_names(self) -> tuple[str, ...]:
        """Output names, e.g. ("image_pooled", "image_seq", "image_mask")."""
        return tuple(f"{self.modality}_{n}" for n in FEATURE_NAMES)


def register_encoder(name: str) -> Callable[[Any], Any]:
    """Registers an encoder factory under ``name``."""
    return ENCODERS.register(name)


def create_encoder(name: str, *, modality: str | None = None, **kwargs: Any) -> Encoder:
    """Builds the encoder registered as ``name``, or the local Hugging Face model ``hf:PATH``.

    ``modality``: the modality the encoder is keyed by; it picks the tower of a multi-tower ``hf:``
    folder (a ``CLIPModel``'s ``image`` or ``text``). Unknown names list the valid ones; a bad ``hf:``
    folder is a ``ConfigError`` saying why.
    """
    from mmedge.hf_folder import is_hf_name

    if is_hf_name(name):
        from mmedge.encoders.hf import hf_encoder

        return hf_encoder(name, modality=modality, **kwargs)
    return ENCODERS.get(name)(**kwargs)


def encoder_tokenizer(name: str) -> Path | None:
    """The ``tokenizer.json`` of text encoder ``name``: the ``hf:`` folder's, or the one the
    registered factory's ``tokenizer_file()`` returns (None when it has none)."""
    from mmedge.hf_folder import TOKENIZER, hf_folder, is_hf_name

    if is_hf_name(name):
        return hf_folder(name) / TOKENIZER
    factory = ENCODERS.get(name)
    tokenizer_file = getattr(factory, "tokenizer_file", None)
    return Path(tokenizer_file()) if callable(tokenizer_file) else None


def list_encoders() -> list[str]:
    """Names of all registered encoders."""
    return ENCODERS.names()


def freeze(module: nn.Module) -> nn.Module:
    """Puts ``module`` in eval mode with gradients off."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
