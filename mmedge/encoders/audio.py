"""Audio encoder: a small CNN over log-mel spectrograms, trained here on the task's labels.

The log-mel front end is numpy code in ``mmedge.runtime.preprocess``: the runtime runs
exactly what training ran.
"""
from __future__ import annotations

import torch
from torch import nn

from mmedge.augmentation import augment_mel
from mmedge.encoders.base import Encoder, register_encoder


def _block(cin: int, cout: int, stride: tuple[int, int] = (2, 2)) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


@register_encoder("audio_cnn")
class AudioCNNEncoder(Encoder):
    """Four strided conv blocks over (1, mels, frames); frequency pooled, time kept as the sequence.

    Input ``mel`` (B, 1, n_mels, T) log-mel (``mmedge.config.AUDIO_CNN_MEL``: 1 s at 16 kHz, 64 mels).
    Outputs pooled (B, D), seq (B, ~T/8, D), mask.
    """

    modality = "audio"
    input_names = ("mel",)
    pretrained_source = "trained by mmedge on the recipe's training split"
    trained_here = True
    train_augment = staticmethod(augment_mel)  # SpecAugment-lite on the log-mel input

    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.BatchNorm2d(1)
        self.body = nn.Sequential(_block(1, 16), _block(16, 32), _block(32, 64), _block(64, dim, (2, 1)))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.body(self.norm(mel))  # (B, D, F/16, ~T/8)
        seq = fmap.mean(dim=2).transpose(1, 2)  # (B, ~T/8, D)
        mask = torch.ones_like(seq[:, :, 0])
        return seq.mean(dim=1), seq, mask
