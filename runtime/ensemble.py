"""Ensemble combination rules (numpy), shared by training and the runtime.

Each member gives logits (B, C); a per-member temperature calibrates them
(``softmax(logits / T)``); the rule combines the K calibrated probability tables.
"""
from __future__ import annotations

from enum import Enum
from typing import Sequence

import numpy as np

from mmedge.errors import ConfigError


class EnsembleMethod(str, Enum):
    """How member outputs are combined."""

    WEIGHTED_MEAN = "weighted_mean"  # sum_k w_k p_k, weights fit on validation
    SOFT_VOTE = "soft_vote"  # mean_k p_k, equal weights
    MAJORITY_VOTE = "majority_vote"  # most (weighted) votes for argmax_k; ties by mean p


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax over the last axis of ``logits / temperature``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def parse_method(method: str | EnsembleMethod) -> EnsembleMethod:
    """The enum member for ``method``; an unknown name lists the valid ones."""
    try:
        return EnsembleMethod(method)
    except ValueError:
        raise ConfigError(
            f"unknown ensemble method {method!r}; valid: {[m.value for m in EnsembleMethod]}"
        ) from None


def combine(
    member_logits: Sequence[np.ndarray], *, method: str | EnsembleMethod,
    weights: Sequence[float] | None = None, temperatures: Sequence[float] | None = None,
) -> np.ndarray:
    """Combines K members' logits (each (B, C)) into ensemble probabilities (B, C).

    Args:
        member_logits: K arrays of logits, same shape.
        method: An ``EnsembleMethod`` or its name.
        weights: K non-negative weights (weighted_mean, majority_vote); default equal.
        temperatures: K positive temperatures; default 1.

    Returns:
        (B, C) float32 probabilities; for majority_vote the (weighted) vote shares, with
        ties broken by the members' mean probability.
    """
    method = parse_method(method)
    k = len(member_logits)
    if k == 0:
        raise ConfigError("an ensemble needs at least one member")
    w = _check_vector("weights", weights, k, allow_zero=True)
    t = _check_vector("temperatures", temperatures, k, allow_zero=False)
    probs = np.stack([softmax(lg, tk) for lg, tk in zip(member_logits, t)])  # (K, B, C)
    if method is EnsembleMethod.SOFT_VOTE:
        return probs.mean(axis=0)
    if method is EnsembleMethod.WEIGHTED_MEAN:
        return np.tensordot(w / w.sum(), probs, axes=1).astype(np.float32)
    votes = np.eye(probs.shape[-1], dtype=np.float32)[probs.argmax(-1)]  # (K, B, C)
    share = np.tensordot(w / w.sum(), votes, axes=1)
    return (share + 1e-6 * probs.mean(axis=0)).astype(np.float32) / (1 + 1e-6)


def _check_vector(name: str, values: Sequence[float] | None, k: int, *, allow_zero: bool) -> np.ndarray:
    if values is None:
        return np.ones(k, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (k,) or not np.all(np.isfinite(v)):
        raise ConfigError(f"{name} must be {k} finite numbers (one per member), got {list(values)}")
    if np.any(v < 0) or (not allow_zero and np.any(v == 0)) or v.sum() <= 0:
        raise ConfigError(f"{name} must be positive (got {v.tolist()})")
    return v
