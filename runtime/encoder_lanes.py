"""Encoder lanes: one call's encoders run at the same time on a CPU, each graph on its share of the threads.

A bundle's encoders do not depend on each other, so on a CPU backend a ``Session`` runs each one's
preprocessing and graph side by side ("lanes") instead of one after another, and every graph gets
``threads // lanes`` intra-op threads instead of all of them. Small graphs at edge batch sizes use
two threads poorly (each operator's split costs a thread wake-up), so two one-thread graphs at once
finish well before the two in turn on two threads. The heads, which need every encoder's features,
run after the lanes on the same share (small graphs too: one thread serves them as well at edge
batch sizes). ``python benchmarks/encoder_lanes.py`` measures whole ``Session.predict`` calls both
ways, side by side (RESULTS.md, "Encoders at once").

The lanes are the calling thread and ``lanes - 1`` pool threads (``concurrent.futures``): ONNX Runtime
and OpenVINO release the GIL while a graph runs (OpenVINO's graphs are compiled unpinned then: pinned
one-thread graphs share one core). Each lane takes the next encoder, longest first by its last
measured time, so with fewer lanes than encoders the long one does not queue behind another. GPU
backends keep one lane.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from mmedge.errors import ConfigError

__all__ = ["LanePlan", "plan_lanes", "check_lanes", "EncoderLanes", "lane_order", "usable_cores"]

T = TypeVar("T")


@dataclass(frozen=True)
class LanePlan:
    """How a Session runs its encoders.

    Attributes:
        lanes: Encoders run at once (1: one after another).
        graph_threads: Intra-op threads of each graph (None: the backend's default, all cores).
        reason: Why, for reports.
    """

    lanes: int
    graph_threads: int | None
    reason: str


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_lanes(lanes: int | None) -> None:
    """Raises ``ConfigError`` unless ``lanes`` is None or a positive integer."""
    if lanes is not None and (isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1):
        raise ConfigError(f"encoder_lanes must be a positive integer or None (automatic), got {lanes!r}")


def plan_lanes(requested: int | None, *, threads: int | None, encoders: int, cpu_backend: bool) -> LanePlan:
    """The lane plan of a Session.

    Args:
        requested: ``Session(encoder_lanes=)``: None for the rule below, else that many lanes (at most
            one per encoder).
        threads: The Session's threads per graph (None: every usable core).
        encoders: How many encoder graphs the Session runs.
        cpu_backend: Whether the Session's backend runs its graphs on CPU threads (``Backend.cpu``).

    Returns:
        The rule for None: on a CPU backend with at least two encoders and two threads, one lane per
        encoder up to the thread count, each graph (heads too) on ``threads // lanes`` threads; else
        one lane and ``threads``.
    """
    check_lanes(requested)
    total = threads if threads is not None else usable_cores()
    if encoders < 2:
        return LanePlan(1, threads, "one encoder")
    if requested is None and not cpu_backend:
        return LanePlan(1, threads, "encoders in turn: the backend runs them on a GPU")
    lanes = min(encoders, total) if requested is None else min(encoders, requested)
    if lanes < 2:
        why = "encoder_lanes=1" if requested == 1 else f"{total} thread"
        return LanePlan(1, threads, f"encoders in turn ({why})")
    per = max(1, total // lanes)
    return LanePlan(lanes, per, f"{lanes} encoders at once, every graph on {per} of {total} threads")


class EncoderLanes:
    """Runs one call's encoders on ``lanes`` threads (the caller's and ``lanes - 1`` pool threads), longest
    first; thread-safe.

    Args:
        lanes: How many run at once (1: in the caller's thread, in order, no pool).
    """

    def __init__(self, lanes: int) -> None:
        check_lanes(lanes)
        self.lanes = lanes
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._last_ms: dict[str, float] = {}

    def run(self, jobs: dict[str, Callable[[], T]]) -> dict[str, T]:
        """Runs every job and returns their results by name (in ``jobs``' order). The calling thread is
        one of the lanes (``lanes - 1`` pool threads join it): every lane takes the next job, longest
        first, until none is left.

        Args:
            jobs: name -> a callable (one encoder's preprocessing and graph). Each job's time is kept
                to order the next call's jobs longest first.

        Raises:
            The first failed job's exception (in ``jobs``' order), once every job has finished.
        """
        if self.lanes == 1 or len(jobs) < 2:
            return {name: job() for name, job in jobs.items()}
        queue, lock = iter(lane_order(list(jobs), self._last_ms)), threading.Lock()
        outcomes: dict[str, tuple[bool, Any]] = {}

        def lane() -> None:
            while True:
                with lock:
                    name = next(queue, None)
                if name is None:
                    return
                try:
                    outcomes[name] = (True, self._timed(name, jobs[name]))
                except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
                    outcomes[name] = (False, exc)

        helpers = [self._executor().submit(lane) for _ in range(min(self.lanes, len(jobs)) - 1)]
        lane()
        wait(helpers)
        for name in jobs:
            ok, value = outcomes[name]
            if not ok:
                raise value
        return {name: outcomes[name][1] for name in jobs}

    def _timed(self, name: str, job: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return job()
        finally:
            self._last_ms[name] = (time.perf_counter() - start) * 1000.0

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.lanes - 1, thread_name_prefix="mmedge-lane")
            return self._pool

    def close(self) -> None:
        """Stops the lane threads (idempotent); a later ``run`` starts them again."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"EncoderLanes(lanes={self.lanes})"


def lane_order(names: Sequence[str], last_ms: dict[str, float]) -> list[str]:
    """``names`` longest first by ``last_ms`` (unknown: 0), ties in the given order."""
    return sorted(names, key=lambda n: -last_ms.get(n, 0.0))
