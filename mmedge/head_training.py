"""Training: frozen encoders (features cached once), every member head, per-member
temperature scaling, and ensemble weights fit on the validation split."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from mmedge.config import MemberConfig, Recipe, TrainConfig
from mmedge.features import FeatureSet
from mmedge.fusion import FusionHead
from mmedge.model import build_head
from mmedge.progress import track
from mmedge.runtime.ensemble import softmax

TEMPERATURE_GRID = np.geomspace(0.05, 20.0, 400)


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
        loss = F.cross_entropy(head(feats), b.y, label_smoothing=0.05)
        extra = head.extra_loss(b.feats, b.y)
        if extra is not None:
            loss = loss + extra
        opt.zero_grad()
        loss.backward()
        opt.step()
        total, n = total + float(loss.detach()) * len(idx), n + len(idx)
    return total / max(n, 1)


def drop_modalities(feats: Mapping[str, torch.Tensor], modalities, p: float, gen: torch.Generator) -> dict:
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


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimizing validation NLL of ``softmax(logits / T)`` (grid search)."""
    y = np.asarray(y)
    nll = [-np.log(softmax(logits, t)[np.arange(len(y)), y] + 1e-12).mean() for t in TEMPERATURE_GRID]
    return float(TEMPERATURE_GRID[int(np.argmin(nll))])


def fit_weights(member_probs: np.ndarray, y: np.ndarray, steps: int = 300) -> np.ndarray:
    """Non-negative weights (summing to 1) minimizing the NLL of ``sum_k w_k p_k`` on validation.

    Args:
        member_probs: (K, N, C) calibrated member probabilities.
        y: (N,) labels.
    """
    p = torch.from_numpy(np.asarray(member_probs, dtype=np.float64))
    target = torch.as_tensor(np.asarray(y), dtype=torch.long)
    a = torch.zeros(p.shape[0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([a], lr=0.05)
    for _ in range(steps):
        w = torch.softmax(a, 0)
        mix = torch.einsum("k,knc->nc", w, p)
        loss = -torch.log(mix[torch.arange(len(target)), target] + 1e-12).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(a, 0).detach().numpy()


@dataclass
class TailTraining:
    """What ``train_tail`` fine-tunes: ``forward(x) -> (pooled, seq, mask)`` with ``tail``'s parameters."""

    forward: Callable[[torch.Tensor], tuple]
    tail: torch.nn.Module
    dim: int
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None


def train_tail(spec: TailTraining, x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], num_classes: int,
               *, epochs: int, seed: int, desc: str) -> float:
    """Trains an encoder's trainable part with a linear probe on the labels; keeps the best
    validation state. ``x``/``y`` map "train"/"val" to inputs (after the frozen trunk) and labels.

    Returns:
        The best validation accuracy of the probe.
    """
    torch.manual_seed(seed)
    probe = torch.nn.Linear(spec.dim, num_classes)
    params = [*spec.tail.parameters(), *probe.parameters()]
    steps = epochs * -(-len(x["train"]) // 64)
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    best, best_state = -1.0, None
    for _ in track(range(epochs), desc):
        spec.tail.train()
        for idx in torch.randperm(len(x["train"]), generator=gen).split(64):
            xb = spec.augment(x["train"][idx], gen) if spec.augment else x["train"][idx]
            loss = F.cross_entropy(probe(spec.forward(xb)[0]), y["train"][idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        spec.tail.eval()
        with torch.no_grad():
            acc = float((probe(spec.forward(x["val"])[0]).argmax(-1) == y["val"]).float().mean())
        if acc > best:
            best, best_state = acc, copy.deepcopy(spec.tail.state_dict())
    spec.tail.load_state_dict(best_state)
    return best


def augment_mel(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random time shift and one frequency mask per batch (SpecAugment-lite)."""
    shift = int(torch.randint(-8, 9, (1,), generator=gen))
    x = torch.roll(x, shifts=shift, dims=-1)
    f0 = int(torch.randint(0, x.shape[2] - 8, (1,), generator=gen))
    x = x.clone()
    x[:, :, f0:f0 + int(torch.randint(0, 8, (1,), generator=gen))] = x.mean()
    return x

