"""The text-embedding LRU cache of a ``Session``: each distinct string runs the text encoder once.

    session = Session("bundle", text_cache_size=1024)   # 0 turns it off
    session.text_cache_info()                            # CacheInfo(hits, misses, ...)
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = ["TextCache", "CacheInfo"]


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
