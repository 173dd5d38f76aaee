"""Ensemble combination rules (numpy), shared by training, the runtime and serving.

Each member gives logits (B, C); a per-member temperature calibrates them
(``softmax(logits / T)``); the rule combines the K calibrated probability tables.
``ensemble_prediction`` turns the members' logits into the ``Prediction`` that ``Session`` and
the Triton combine step (``mmedge.serve.steps.Combine``) both return.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Sequence

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


@dataclass(frozen=True)
class MemberRule:
    """What the ensemble rule needs of one member (``mmedge.runtime.bundle.MemberInfo`` has the same fields)."""

    name: str
    weight: float = 1.0
    temperature: float = 1.0


def ensemble_prediction(logits: Mapping[str, np.ndarray], members: Sequence[Any], *, method: str | EnsembleMethod,
                        labels: Sequence[str], backend: str, precision: str, skipped: Sequence[str] = (),
                        note: str = "", timings: dict[str, float] | None = None) -> Any:
    """The ``Prediction`` of the members that ran.

    Args:
        logits: Member name -> logits (B, C).
        members: The members that ran, in order: anything with ``name``, ``weight`` and ``temperature``
            (``MemberInfo``, ``MemberRule``). ``soft_vote`` ignores the weights.
        method: The ensemble rule.
        labels: The class names.
        backend: What ran the graphs.
        precision: The precision that ran.
        skipped: Members left out (an optional modality not given).
        note: Why they were left out.
        timings: Stage timings so far; ``ensemble`` is added to this very dict, which the prediction keeps.

    Returns:
        A ``mmedge.runtime.prediction.Prediction``.
    """
    from mmedge.runtime.prediction import Prediction

    start, method = time.perf_counter(), parse_method(method)
    probs = combine([logits[m.name] for m in members], method=method, temperatures=[m.temperature for m in members],
                    weights=None if method is EnsembleMethod.SOFT_VOTE else [m.weight for m in members])  # (B, C)
    member_probs = {m.name: softmax(logits[m.name], m.temperature) for m in members}
    indices = probs.argmax(axis=1).astype(np.int64)  # (B,)
    timings = {} if timings is None else timings
    timings["ensemble"] = (time.perf_counter() - start) * 1000.0
    return Prediction(labels=[labels[i] for i in indices], indices=indices, probabilities=probs,
                      member_probabilities=member_probs, timings_ms=timings, backend=backend, precision=precision,
                      members=tuple(m.name for m in members), skipped_members=tuple(skipped), note=note)
