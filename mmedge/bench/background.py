"""``mmedge bench --background-load``: the runtime timed beside a busy application's numpy work.

Camera and robot applications run numpy (and OpenCV) beside inference, in the same process.
``NumpyLoad`` is such a neighbour: a thread doing float32 matmuls with numpy's own BLAS threads
(not the bench's one-thread rule) for ``busy_ms`` of every ``period_ms``, like per-frame image
work. ``with_and_without`` times the runtime's configurations once more while it runs and
reports p50 / p90 / p99 without and with it, and the with-load p90/p50 (the issue's target:
<= 1.25). The runtime holds its own preprocessing to one BLAS thread (``Session(preprocess_threads=1)``)
so that it does not add a thread fight of its own.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["NumpyLoad", "with_and_without"]


@dataclass(frozen=True)
class NumpyLoad:
    """A thread of numpy matmuls beside the timed code, while ``with load.running():`` holds.

    Attributes:
        size: Side of the square float32 matrices multiplied.
        busy_ms: Milliseconds of matmuls per period.
        period_ms: Length of one period (busy, then asleep).
    """

    size: int = 384
    busy_ms: float = 10.0
    period_ms: float = 20.0

    def describe(self) -> dict[str, Any]:
        """What ran, for the report."""
        return {"kind": "numpy float32 matmuls in a thread of the same process, numpy's default BLAS threads",
                **asdict(self), "duty": self.busy_ms / self.period_ms}

    def running(self) -> "_Running":
        """A context manager: the load's thread runs inside it."""
        return _Running(self)


class _Running:
    def __init__(self, load: NumpyLoad) -> None:
        self.load, self._stop = load, threading.Event()
        self._thread = threading.Thread(target=self._work, name="mmedge-numpy-load", daemon=True)

    def __enter__(self) -> "_Running":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _work(self) -> None:
        size, busy_ms, period_ms = self.load.size, self.load.busy_ms, self.load.period_ms
        a, b = np.random.default_rng(0).standard_normal((2, size, size), dtype=np.float32)
        while not self._stop.is_set():
            start = time.perf_counter()
            while (time.perf_counter() - start) * 1000 < busy_ms:
                a = np.tanh(a @ b * (1.0 / size))  # bounded values, real BLAS work
            self._stop.wait(max(0.0, (period_ms - (time.perf_counter() - start) * 1000) / 1000))


def _summary(latency: Mapping[str, float]) -> dict[str, float]:
    return {k: float(latency[k]) for k in ("p50", "p90", "p99")}


def with_and_without(records: Sequence[Mapping[str, Any]], time_again: Callable[[], list[dict[str, Any]]],
                     load: NumpyLoad | None = None) -> dict[str, Any]:
    """Times the same configurations again beside ``load`` and compares with ``records``.

    Args:
        records: The config records timed without the load.
        time_again: Times the same configurations again, returning their records.
        load: The neighbour (default ``NumpyLoad()``).

    Returns:
        ``{"workload": {...}, "configs": {id: {"without", "with": {p50, p90, p99}, "p99_ratio",
        "p90_over_p50_with"}}}``.
    """
    load = load or NumpyLoad()
    with load.running():
        loaded = {r["id"]: r for r in time_again()}
    out = {}
    for r in records:
        if r["id"] not in loaded:
            continue
        without, with_ = _summary(r["latency_ms"]), _summary(loaded[r["id"]]["latency_ms"])
        out[r["id"]] = {"without": without, "with": with_, "p99_ratio": with_["p99"] / without["p99"],
                        "p90_over_p50_with": with_["p90"] / with_["p50"]}
    return {"workload": load.describe(), "configs": out}
