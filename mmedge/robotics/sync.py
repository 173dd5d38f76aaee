"""Pairing messages of several topics by header stamp: plain classes shared by replay and the node.

``ApproximateTimeSync`` follows ROS' ``message_filters.ApproximateTimeSynchronizer`` (its Python
policy): one queue per topic of at most ``queue_size`` messages keyed by stamp; a new message fires
the first combination, nearest stamps first, whose stamps lie within ``slop`` of each other, and
those messages leave their queues. Messages pushed out of a full queue are counted as dropped.
``LatestValue`` is the "latest text wins" policy for captions: no pairing, the newest one is used.
``SampleWindow`` keeps the last seconds of a chunked audio stream, for audio recorded in short chunks.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any, Generic, Sequence, TypeVar

from mmedge.errors import ConfigError

__all__ = ["Stamped", "ApproximateTimeSync", "LatestValue", "SampleWindow"]

T = TypeVar("T")


@dataclass(frozen=True)
class Stamped(Generic[T]):
    """An item with its header stamp (nanoseconds) and the topic it came from."""

    topic: str
    stamp_ns: int
    item: T


class ApproximateTimeSync:
    """Approximate-time pairing of ``topics`` (thread-safe).

    Args:
        topics: The topics to pair; a match holds one message of each.
        queue_size: Messages kept per topic while waiting for partners.
        slop: Largest spread of stamps within a match, in seconds.

    Attributes:
        dropped: Per topic, messages pushed out of a full queue (or replaced by one with the same stamp).
    """

    def __init__(self, topics: Sequence[str], *, queue_size: int = 10, slop: float = 0.05) -> None:
        if not topics or len(set(topics)) != len(topics):
            raise ConfigError(f"the synchronizer needs one or more distinct topics, got {list(topics)}")
        if queue_size < 1 or not slop >= 0:
            raise ConfigError(f"queue_size must be >= 1 and slop >= 0 seconds, got {queue_size} and {slop}")
        self.topics = tuple(topics)
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(slop * 1e9))
        self._queues: dict[str, dict[int, Any]] = {t: {} for t in self.topics}
        self.dropped: dict[str, int] = {t: 0 for t in self.topics}
        self._lock = threading.Lock()

    def add(self, topic: str, stamp_ns: int, item: Any) -> dict[str, Stamped] | None:
        """Adds one message; returns the match it completes (topic -> ``Stamped``), or None."""
        with self._lock:
            queue = self._queues[topic]
            if stamp_ns in queue:
                self.dropped[topic] += 1
            queue[stamp_ns] = item
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.dropped[topic] += 1
            return self._match(topic, stamp_ns)

    def _candidates(self, topic: str, stamp_ns: int) -> list[list[int]] | None:
        stamps = []
        for other in self.topics:
            if other == topic:
                stamps.append([stamp_ns])
                continue
            near = sorted((s for s in self._queues[other] if abs(s - stamp_ns) <= self.slop_ns),
                          key=lambda s: abs(s - stamp_ns))
            if not near:
                return None
            stamps.append(near)
        return stamps

    def _match(self, topic: str, stamp_ns: int) -> dict[str, Stamped] | None:
        candidates = self._candidates(topic, stamp_ns)
        if candidates is None:
            return None
        for combo in itertools.product(*candidates):
            if max(combo) - min(combo) <= self.slop_ns:
                return {t: Stamped(t, s, self._queues[t].pop(s)) for t, s in zip(self.topics, combo)}
        return None

    def pending(self) -> dict[str, int]:
        """Messages still waiting for partners, per topic (unpaired when the input ends)."""
        with self._lock:
            return {t: len(q) for t, q in self._queues.items()}


class LatestValue(Generic[T]):
    """Latest-wins: holds the newest item of a topic (captions), thread-safe."""

    def __init__(self, initial: T | None = None) -> None:
        self._value = initial
        self._lock = threading.Lock()

    def set(self, value: T) -> None:
        """Replaces the held item."""
        with self._lock:
            self._value = value

    def get(self) -> T | None:
        """The newest item (None before the first)."""
        with self._lock:
            return self._value


class SampleWindow:
    """The latest ``seconds`` of a chunked audio stream (``AudioData`` chunks), thread-safe.

    Each chunk is stamped with the time of its last sample; ``window(end_ns)`` returns the samples
    of the chunks stamped up to ``end_ns``, the last ``seconds`` of them.
    """

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ConfigError(f"the audio window must be > 0 seconds, got {seconds}")
        self.seconds = float(seconds)
        self._chunks: list[tuple[int, Any]] = []  # (stamp_ns, float32 samples), in arrival order
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, samples: Any) -> None:
        """Appends one chunk; chunks older than twice the window are forgotten."""
        with self._lock:
            self._chunks.append((int(stamp_ns), samples))
            horizon = int(stamp_ns) - int(2 * self.seconds * 1e9)
            while self._chunks and self._chunks[0][0] < horizon:
                self._chunks.pop(0)

    def window(self, end_ns: int, rate: int) -> Any | None:
        """The last ``seconds`` of samples at ``rate`` up to ``end_ns`` (None before the first chunk)."""
        import numpy as np

        with self._lock:
            parts = [s for t, s in self._chunks if t <= end_ns]
        if not parts:
            return None
        return np.concatenate(parts)[-int(round(self.seconds * rate)):]
