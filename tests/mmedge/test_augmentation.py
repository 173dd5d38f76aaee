"""``mmedge.augmentation``: modality dropout keeps a modality per sample; the log-mel augmentation
keeps shapes and follows its generator."""
from __future__ import annotations

import torch

from mmedge.augmentation import MEL_MAX_MASK, augment_mel, drop_modalities
from mmedge.encoders import create_encoder


def test_modality_dropout_never_drops_every_modality_of_a_sample():
    feats = {f"{m}_{k}": torch.ones(512, 4) for m in ("image", "text") for k in ("pooled", "seq")}
    out = drop_modalities(feats, ("image", "text"), 0.9, torch.Generator().manual_seed(0))
    kept = torch.stack([out["image_pooled"][:, 0], out["text_pooled"][:, 0]], 1)  # (B, M), 1 = kept
    assert (kept.sum(1) >= 1).all() and (kept == 0).any()
    assert torch.equal(out["image_seq"][:, 0], out["image_pooled"][:, 0])  # a dropped modality loses all its features
    assert drop_modalities(feats, ("image",), 0.9, torch.Generator()) == feats  # one modality: nothing dropped


def test_mel_augmentation_keeps_the_shape_and_follows_its_generator():
    mel = torch.randn(3, 1, 64, 101)
    a, b = (augment_mel(mel, torch.Generator().manual_seed(7)) for _ in range(2))
    assert a.shape == mel.shape and torch.equal(a, b) and not torch.equal(a, mel)
    masked = [(a[0, 0, f] == mel.mean()).all().item() for f in range(64)]
    assert sum(masked) < MEL_MAX_MASK


def test_the_audio_encoder_trained_here_names_its_augmentation():
    assert create_encoder("audio_cnn").train_augment is augment_mel
    assert create_encoder("efficientnet_lite0").train_augment is None
