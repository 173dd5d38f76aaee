"""The result of ``Session.predict``, and the text-embedding LRU cache it uses."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = ["Prediction", "TextCache", "CacheInfo"]


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


@dataclass(frozen=True)
class CacheInfo:
    """Text cache statistics: hits and misses count strings; ``encoder_runs`` counts encoder calls."""

    hits: int
    misses: int
    maxsize: int
    currsize: int
    encoder_runs: int


def _concat_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stacks cached rows; rows encoded at different token counts (a bucketed tokenizer) are
    zero-padded along the token axis, which the text mask (zero there too) hides."""
    length = max(r.shape[1] for r in rows) if rows[0].ndim >= 2 else None
    if length is None or all(r.shape[1] == length for r in rows):
        return np.concatenate(rows)
    widths = [[(0, 0), (0, length - r.shape[1])] + [(0, 0)] * (r.ndim - 2) for r in rows]
    return np.concatenate([np.pad(r, w) for r, w in zip(rows, widths)])


@dataclass
class TextCache:
    """Thread-safe LRU of text encoder outputs, keyed by the exact string.

    Args:
        maxsize: Most strings kept (0 disables caching).
    """

    maxsize: int
    _rows: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stats: list[int] = field(default_factory=lambda: [0, 0, 0])  # hits, misses, encoder runs

    def lookup(self, texts: Sequence[str], encode: Callable[[list[str]], dict[str, np.ndarray]]
               ) -> dict[str, np.ndarray]:
        """Encoder outputs for ``texts`` (each (B, ...)), encoding only the strings not cached.

        Args:
            texts: The batch of strings.
            encode: Runs the encoder on a list of strings, returning name -> (n, ...) arrays.
        """
        rows = self._get_many(texts)
        misses = list(dict.fromkeys(t for t in texts if t not in rows))
        if misses:
            outputs = encode(misses)
            fresh = {t: {k: v[i:i + 1] for k, v in outputs.items()} for i, t in enumerate(misses)}
            self._put_many(fresh)
            rows.update(fresh)
        names = rows[texts[0]].keys()
        return {k: _concat_rows([rows[t][k] for t in texts]) for k in names}

    def _get_many(self, texts: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        found = {}
        with self._lock:
            for t in texts:
                if t in self._rows:
                    self._rows.move_to_end(t)
                    found[t] = self._rows[t]
            self._stats[0] += sum(t in found for t in texts)
            self._stats[1] += sum(t not in found for t in texts)
        return found

    def _put_many(self, fresh: dict[str, dict[str, np.ndarray]]) -> None:
        with self._lock:
            self._stats[2] += 1
            if self.maxsize <= 0:
                return
            for t, row in fresh.items():
                self._rows[t] = row
                self._rows.move_to_end(t)
            while len(self._rows) > self.maxsize:
                self._rows.popitem(last=False)

    def info(self) -> CacheInfo:
        """Current statistics."""
        with self._lock:
            return CacheInfo(self._stats[0], self._stats[1], self.maxsize, len(self._rows), self._stats[2])

    def clear(self) -> None:
        """Drops every cached string (statistics are kept)."""
        with self._lock:
            self._rows.clear()
