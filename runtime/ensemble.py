"""Ensemble combination rules (numpy), shared by training, the runtime and serving.

Each member gives logits (B, C); a per-member temperature calibrates them
(``softmax(logits / T)``); the rule combines the K calibrated probability tables. Each rule is one
entry of ``_RULES``; ``stacking`` also needs its fitted ``Stacking`` model (a logistic regression on
the members' calibrated log-probabilities, fit on the validation split by ``mmedge.ensemble_selection``).
``ensemble_prediction`` turns the members' logits into the ``Prediction`` that ``Session`` and
the Triton combine step (``mmedge.serve.steps.Combine``) both return.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmedge.errors import ConfigError


class EnsembleMethod(str, Enum):
    """How member outputs are combined."""

    WEIGHTED_MEAN = "weighted_mean"  # sum_k w_k p_k, weights fit on validation
    SOFT_VOTE = "soft_vote"  # mean_k p_k, equal weights
    MAJORITY_VOTE = "majority_vote"  # most (weighted) votes for argmax_k; ties by mean p
    STACKING = "stacking"  # softmax(coef @ concat_k log p_k + intercept), fit on validation

_EPS = 1e-12


@dataclass(frozen=True)
class Stacking:
    """The stacking rule's model: ``softmax(coef @ concat_k log p_k + intercept)``.

    Attributes:
        coef: (C, K*C) coefficients over the K members' concatenated log-probabilities.
        intercept: (C,) class offsets.
    """

    coef: np.ndarray
    intercept: np.ndarray

    def __post_init__(self) -> None:
        coef, intercept = np.asarray(self.coef, dtype=np.float64), np.asarray(self.intercept, dtype=np.float64)
        c = intercept.shape[0] if intercept.ndim == 1 else 0
        if c == 0 or coef.ndim != 2 or coef.shape[0] != c or coef.shape[1] % c or not np.all(np.isfinite(coef)) \
                or not np.all(np.isfinite(intercept)):
            raise ConfigError(f"stacking coefficients must be finite, coef (C, K*C) and intercept (C,); got "
                              f"{coef.shape} and {intercept.shape}: re-train the ensemble")
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)

    @property
    def members(self) -> int:
        """K, the number of members the coefficients are for."""
        return self.coef.shape[1] // self.coef.shape[0]

    def predict(self, probs: np.ndarray) -> np.ndarray:
        """(K, N, C) calibrated member probabilities -> (N, C) ensemble probabilities."""
        k, n, c = probs.shape
        if (k, c) != (self.members, self.coef.shape[0]):
            raise ConfigError(f"stacking was fit on {self.members} members of {self.coef.shape[0]} classes; "
                              f"got {k} members of {c} classes")
        feats = np.log(np.asarray(probs, dtype=np.float64) + _EPS).transpose(1, 0, 2).reshape(n, k * c)
        z = feats @ self.coef.T + self.intercept
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready coefficients (``from_dict`` inverts it)."""
        return {"coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Stacking":
        """The model ``to_dict`` wrote."""
        return cls(np.asarray(data["coef"], dtype=np.float64), np.asarray(data["intercept"], dtype=np.float64))


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
    stacking: Stacking | None = None,
) -> np.ndarray:
    """Combines K members' logits (each (B, C)) into ensemble probabilities (B, C).

    Args:
        member_logits: K arrays of logits, same shape.
        method: An ``EnsembleMethod`` or its name.
        weights: K non-negative weights (weighted_mean, majority_vote); default equal.
        temperatures: K positive temperatures; default 1.
        stacking: The fitted model of the ``stacking`` rule (required by it, ignored by the others).

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
    if method is EnsembleMethod.STACKING and stacking is None:
        raise ConfigError("the stacking rule needs its fitted coefficients (Stacking); re-train or re-export "
                          "the ensemble, or pick another method")
    probs = np.stack([softmax(lg, tk) for lg, tk in zip(member_logits, t)])  # (K, B, C)
    return _RULES[method](probs, w / w.sum(), stacking).astype(np.float32)


def _majority_vote(probs: np.ndarray, w: np.ndarray, _: Stacking | None) -> np.ndarray:
    votes = np.eye(probs.shape[-1], dtype=np.float32)[probs.argmax(-1)]  # (K, B, C)
    share = np.tensordot(w, votes, axes=1)
    return (share + 1e-6 * probs.mean(axis=0)) / (1 + 1e-6)


_RULES: dict[EnsembleMethod, Callable[[np.ndarray, np.ndarray, Stacking | None], np.ndarray]] = {
    EnsembleMethod.SOFT_VOTE: lambda probs, w, _: probs.mean(axis=0),
    EnsembleMethod.WEIGHTED_MEAN: lambda probs, w, _: np.tensordot(w, probs, axes=1),
    EnsembleMethod.MAJORITY_VOTE: _majority_vote,
    EnsembleMethod.STACKING: lambda probs, w, stacking: stacking.predict(probs),
}


def _check_vector(name: str, values: Sequence[float] | None, k: int, *, allow_zero: bool) -> np.ndarray:
    if values is None:
        return np.ones(k, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (k,) or not np.all(np.isfinite(v)):
        raise ConfigError(f"{name} must be {k} finite numbers (one per member), got {list(values)}")
    if np.any(v < 0) or (not allow_zero and np.any(v == 0)) or v.sum() <= 0:
        raise ConfigError(f"{name} must be positive (got {v.tolist()})")
    return v


def read_stacking(value: Any, path: str) -> Mapping[str, Any]:
    """The manifest's ``ensemble.stacking`` check: coefficients that ``Stacking`` accepts, kept as written.

    Raises:
        SchemaError: unreadable coefficients, with their JSON path.
    """
    from mmedge.runtime.manifest_schema import SchemaError, obj

    data = obj(value, path)
    try:
        Stacking.from_dict(data)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise SchemaError(path, f"stacking coefficients unreadable ({type(exc).__name__}: {exc})") from None
    return data


@dataclass(frozen=True)
class MemberRule:
    """What the ensemble rule needs of one member (``mmedge.runtime.bundle.MemberInfo`` has the same fields)."""

    name: str
    weight: float = 1.0
    temperature: float = 1.0


def ensemble_prediction(logits: Mapping[str, np.ndarray], members: Sequence[Any], *, method: str | EnsembleMethod,
                        labels: Sequence[str], backend: str, precision: str, skipped: Sequence[str] = (),
                        note: str = "", timings: dict[str, float] | None = None,
                        stacking: Stacking | None = None) -> Any:
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
        stacking: The ``stacking`` rule's model. When only some members ran (an optional modality not
            given), the model, fit on all of them, cannot apply: their weights combine them instead.

    Returns:
        A ``mmedge.runtime.prediction.Prediction``.
    """
    start, method = time.perf_counter(), effective_method(method, stacking, len(members))
    probs = combine([logits[m.name] for m in members], method=method, temperatures=[m.temperature for m in members],
                    weights=None if method is EnsembleMethod.SOFT_VOTE else [m.weight for m in members],
                    stacking=stacking)  # (B, C)
    member_probs = {m.name: softmax(logits[m.name], m.temperature) for m in members}
    timings = {} if timings is None else timings
    timings["ensemble"] = (time.perf_counter() - start) * 1000.0
    return prediction_of(probs, member_probs, labels=labels, backend=backend, precision=precision,
                         skipped=skipped, note=note, timings=timings)


def effective_method(method: str | EnsembleMethod, stacking: Stacking | None, members: int) -> EnsembleMethod:
    """The rule that really combines ``members`` members: ``stacking`` fit on another number of members (an
    optional modality not given) cannot apply, so their weights combine them (``weighted_mean``) instead."""
    method = parse_method(method)
    if method is EnsembleMethod.STACKING and stacking is not None and stacking.members != members:
        return EnsembleMethod.WEIGHTED_MEAN
    return method


def prediction_of(probs: np.ndarray, member_probs: Mapping[str, np.ndarray], *, labels: Sequence[str], backend: str,
                  precision: str, skipped: Sequence[str] = (), note: str = "",
                  timings: dict[str, float] | None = None) -> Any:
    """The ``Prediction`` of ensemble probabilities (B, C) and each member's (B, C), in member order (the
    runtime's combine above, or the merged heads graph: ``mmedge.runtime.merged_heads``)."""
    from mmedge.runtime.prediction import Prediction

    indices = np.asarray(probs).argmax(axis=1).astype(np.int64)  # (B,)
    return Prediction(labels=[labels[i] for i in indices], indices=indices, probabilities=probs,
                      member_probabilities=dict(member_probs), timings_ms={} if timings is None else timings,
                      backend=backend, precision=precision, members=tuple(member_probs),
                      skipped_members=tuple(skipped), note=note)
