"""One member head's training loop over cached encoder features: AdamW, cosine decay, modality
dropout, early stopping on the validation split.

The encoders' own training is ``mmedge.encoder_tuning``, the augmentations ``mmedge.augmentation``,
temperatures and ensemble weights ``mmedge.ensemble_fit``; ``mmedge.training`` runs them in order.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
from torch.nn import functional as F

from mmedge.augmentation import drop_modalities
from mmedge.config import MemberConfig, Recipe, TrainConfig
from mmedge.features import FeatureSet
from mmedge.fusion import FusionHead
from mmedge.model import build_head
from mmedge.progress import track

__all__ = ["HeadResult", "predict_logits", "accuracy", "train_head", "train_member"]


@dataclass
class HeadResult:
    """A trained head and what was measured on the validation split."""

    head: FusionHead
    val_accuracy: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def predict_logits(head: FusionHead, data: FeatureSet, batch: int = 256) -> np.ndarray:
    """Logits (N, C) of ``head`` over a feature set, in eval mode."""
    head.eval()
    out = [head({k: v[i:i + batch] for k, v in data.feats.items()}) for i in range(0, len(data), batch)]
    return torch.cat(out).numpy()


def accuracy(probs_or_logits: np.ndarray, y: np.ndarray | torch.Tensor) -> float:
    """Top-1 accuracy of (N, C) scores against labels (N,)."""
    return float((np.asarray(probs_or_logits).argmax(-1) == np.asarray(y)).mean())


def _epoch(head: FusionHead, opt, data: FeatureSet, cfg: TrainConfig, gen: torch.Generator) -> float:
    head.train()
    total, n = 0.0, 0
    for idx in torch.randperm(len(data), generator=gen).split(cfg.batch_size):
        if len(idx) < 2:
            continue
        b = data.take(idx)
        feats = drop_modalities(b.feats, head.modalities, cfg.modality_dropout, gen)
        loss = F.cross_entropy(head(feats), b.y, label_smoothing=cfg.label_smoothing)
        extra = head.extra_loss(b.feats, b.y)
        if extra is not None:
            loss = loss + extra
        opt.zero_grad()
        loss.backward()
        opt.step()
        total, n = total + float(loss.detach()) * len(idx), n + len(idx)
    return total / max(n, 1)


def train_head(head: FusionHead, train: FeatureSet, val: FeatureSet, cfg: TrainConfig, *, seed: int, desc: str) -> HeadResult:
    """Trains ``head`` with AdamW + cosine decay, keeps the best validation state (early stopping)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    best_key, best_state, bad, history = (-1.0, 0.0), None, 0, []
    for epoch in track(range(cfg.epochs), desc):
        loss = _epoch(head, opt, train, cfg, gen)
        sched.step()
        logits = predict_logits(head, val)
        acc = accuracy(logits, val.y)
        nll = float(F.cross_entropy(torch.from_numpy(logits), val.y))
        history.append({"epoch": epoch, "train_loss": loss, "val_accuracy": acc, "val_nll": nll})
        if (acc, -nll) > best_key:
            best_key, best_state, bad = (acc, -nll), copy.deepcopy(head.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    return HeadResult(head, best_key[0], len(history), history)


def train_member(member: MemberConfig, recipe: Recipe, dims: Mapping[str, int], num_classes: int,
                 train: FeatureSet, val: FeatureSet) -> HeadResult:
    """Builds and trains one member's fusion head."""
    head = build_head(member, recipe, dims, num_classes)
    return train_head(head, train, val, recipe.train, seed=member.seed, desc=f"training {member.name}")
