"""Training-time augmentation: modality dropout for the heads, SpecAugment-lite for log-mel encoders.

Each augmentation's numbers are stated here once; an encoder trained here names its own input
augmentation (``Encoder.train_augment``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

__all__ = ["drop_modalities", "augment_mel", "MEL_MAX_SHIFT", "MEL_MAX_MASK"]

MEL_MAX_SHIFT = 8  # frames a log-mel clip is rolled by, at most, either way
MEL_MAX_MASK = 8  # mel bins one frequency mask covers, at most (exclusive)


def drop_modalities(feats: Mapping[str, torch.Tensor], modalities: Sequence[str], p: float, gen: torch.Generator
                    ) -> dict[str, torch.Tensor]:
    """Modality dropout (ModDrop): zeroes each sample's features of a modality with probability
    ``p`` (never all of a sample's modalities), so heads don't lean on a single modality."""
    if p <= 0 or len(modalities) < 2:
        return dict(feats)
    n = next(iter(feats.values())).shape[0]
    drop = torch.rand(n, len(modalities), generator=gen) < p  # (B, M)
    drop[drop.all(1)] = False
    out = dict(feats)
    for j, m in enumerate(modalities):
        keep = (~drop[:, j]).float()
        for name in (f"{m}_pooled", f"{m}_seq"):
            if name in out:
                out[name] = out[name] * keep.view(-1, *[1] * (out[name].dim() - 1))
    return out


def augment_mel(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random time shift and one frequency mask per batch (SpecAugment-lite) of (B, 1, mels, frames) log-mels."""
    shift = int(torch.randint(-MEL_MAX_SHIFT, MEL_MAX_SHIFT + 1, (1,), generator=gen))
    x = torch.roll(x, shifts=shift, dims=-1)
    f0 = int(torch.randint(0, x.shape[2] - MEL_MAX_MASK, (1,), generator=gen))
    x = x.clone()
    x[:, :, f0:f0 + int(torch.randint(0, MEL_MAX_MASK, (1,), generator=gen))] = x.mean()
    return x
