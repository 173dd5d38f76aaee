"""Training an encoder's trainable part on the labels, before the heads train: a whole encoder
trained here (the audio CNN), or the last blocks of a pretrained one (``recipe.unfreeze``)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

from mmedge.config import TrainConfig
from mmedge.progress import track

__all__ = ["TailTraining", "train_tail"]


@dataclass
class TailTraining:
    """What ``train_tail`` fine-tunes: ``forward(x) -> (pooled, seq, mask)`` with ``tail``'s parameters."""

    forward: Callable[[torch.Tensor], tuple]
    tail: torch.nn.Module
    dim: int
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None


def train_tail(spec: TailTraining, x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], num_classes: int,
               cfg: TrainConfig, *, desc: str) -> float:
    """Trains an encoder's trainable part with a linear probe on the labels; keeps the best
    validation state. ``x``/``y`` map "train"/"val" to inputs (after the frozen trunk) and labels;
    ``cfg`` gives the ``encoder_*`` hyperparameters, ``label_smoothing`` and ``seed``.

    Returns:
        The best validation accuracy of the probe.
    """
    torch.manual_seed(cfg.seed)
    probe = torch.nn.Linear(spec.dim, num_classes)
    params = [*spec.tail.parameters(), *probe.parameters()]
    steps = cfg.encoder_epochs * -(-len(x["train"]) // cfg.encoder_batch_size)
    opt = torch.optim.AdamW(params, lr=cfg.encoder_lr, weight_decay=cfg.encoder_weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.encoder_lr, total_steps=max(steps, 1))
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state = -1.0, None
    for _ in track(range(cfg.encoder_epochs), desc):
        spec.tail.train()
        for idx in torch.randperm(len(x["train"]), generator=gen).split(cfg.encoder_batch_size):
            xb = spec.augment(x["train"][idx], gen) if spec.augment else x["train"][idx]
            loss = F.cross_entropy(probe(spec.forward(xb)[0]), y["train"][idx], label_smoothing=cfg.label_smoothing)
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
