"""Calibration and combination fit on the validation split: each member's temperature, the
ensemble's weights (the combination rule itself is ``mmedge.runtime.ensemble``)."""
from __future__ import annotations

import numpy as np
import torch

from mmedge.runtime.ensemble import softmax

__all__ = ["TEMPERATURE_GRID", "WEIGHT_FIT_STEPS", "WEIGHT_FIT_LR", "fit_temperature", "fit_weights"]

TEMPERATURE_GRID = np.geomspace(0.05, 20.0, 400)  # temperatures tried by fit_temperature
WEIGHT_FIT_STEPS = 300  # Adam steps of fit_weights
WEIGHT_FIT_LR = 0.05  # its learning rate


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimizing validation NLL of ``softmax(logits / T)`` (grid search)."""
    y = np.asarray(y)
    nll = [-np.log(softmax(logits, t)[np.arange(len(y)), y] + 1e-12).mean() for t in TEMPERATURE_GRID]
    return float(TEMPERATURE_GRID[int(np.argmin(nll))])


def fit_weights(member_probs: np.ndarray, y: np.ndarray, steps: int = WEIGHT_FIT_STEPS) -> np.ndarray:
    """Non-negative weights (summing to 1) minimizing the NLL of ``sum_k w_k p_k`` on validation.

    Args:
        member_probs: (K, N, C) calibrated member probabilities.
        y: (N,) labels.
        steps: Adam steps.
    """
    p = torch.from_numpy(np.asarray(member_probs, dtype=np.float64))
    target = torch.as_tensor(np.asarray(y), dtype=torch.long)
    a = torch.zeros(p.shape[0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([a], lr=WEIGHT_FIT_LR)
    for _ in range(steps):
        w = torch.softmax(a, 0)
        mix = torch.einsum("k,knc->nc", w, p)
        loss = -torch.log(mix[torch.arange(len(target)), target] + 1e-12).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(a, 0).detach().numpy()
