"""The result of ``Session.predict``."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction:
    """Ensemble prediction for a batch of B samples over C classes.

    Attributes:
        labels: Predicted label per row (argmax of ``probabilities``).
        indices: int64 (B,) predicted class indices.
        probabilities: float32 (B, C) ensemble probabilities.
        member_probabilities: member name -> float32 (B, C) calibrated probabilities
            (``softmax(logits / T)``) of every member that ran.
        timings_ms: Milliseconds per stage: ``preprocess.<modality>``, ``encoder.<modality>``
            (absent when every text came from the cache), ``head.<member>``, ``ensemble``, ``total``.
        backend: The backend that ran (``ort``, ``tensorrt``...).
        precision: The precision that ran (``fp32``, ``int8``...).
        members: Members that ran.
        skipped_members: Members left out because an optional modality was not given.
        note: Why members were skipped (empty when all ran).
    """

    labels: list[str]
    indices: np.ndarray
    probabilities: np.ndarray
    member_probabilities: dict[str, np.ndarray]
    timings_ms: dict[str, float]
    backend: str
    precision: str
    members: tuple[str, ...] = ()
    skipped_members: tuple[str, ...] = ()
    note: str = ""

    def _single(self) -> int:
        if len(self.labels) != 1:
            raise ValueError(f"this prediction holds a batch of {len(self.labels)}; use .labels / .probabilities")
        return int(self.indices[0])

    @property
    def label(self) -> str:
        """The label of a batch-of-1 prediction."""
        self._single()
        return self.labels[0]

    @property
    def probability(self) -> float:
        """The probability of the predicted label of a batch-of-1 prediction."""
        return float(self.probabilities[0, self._single()])
