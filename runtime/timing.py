"""Latency statistics and interleaved timing: torch- and onnx-free, so a device can time itself.

Honesty rules the functions follow: warm-up runs are never in the samples; configurations
are timed interleaved in a fresh random order each iteration, so drift (thermal, other
processes) hits all of them alike; medians are the quoted figure; nothing is timed twice
and averaged away. ``mmedge.bench`` (the ``mmedge bench`` command) builds on these.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["LatencyStats", "run_interleaved", "stage_stats"]


@dataclass(frozen=True)
class LatencyStats:
    """Summary of latency samples in milliseconds.

    Percentiles are ``numpy.percentile(..., method="linear")``. ``throughput_per_s`` is samples
    (not calls) per second at the median: ``batch * 1000 / p50``.
    """

    n: int
    batch: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    std: float
    throughput_per_s: float

    @classmethod
    def from_samples(cls, ms: Sequence[float], *, batch: int = 1) -> "LatencyStats":
        """Summarizes ``ms`` (one value per call, each call processing ``batch`` samples).

        Raises:
            ValueError: no samples, a negative or non-finite sample, or batch < 1.
        """
        x = np.asarray(ms, dtype=np.float64)
        if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x < 0):
            raise ValueError(f"need at least one finite, non-negative sample, got {list(ms)[:5]}...")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        p50, p90, p99 = np.percentile(x, [50, 90, 99], method="linear")
        return cls(n=int(x.size), batch=int(batch), p50=float(p50), p90=float(p90), p99=float(p99),
                   mean=float(x.mean()), min=float(x.min()), max=float(x.max()), std=float(x.std()),
                   throughput_per_s=float(batch * 1000.0 / p50) if p50 > 0 else math.inf)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def run_interleaved(fns: Mapping[str, Callable[[], Any]], *, iters: int, warmup: int, rng_seed: int = 0,
                    on_result: Callable[[str, Any], None] | None = None) -> dict[str, list[float]]:
    """Times every function once per iteration, in a fresh random order each iteration.

    Args:
        fns: Configuration name -> a call to time (no arguments).
        iters: Timed iterations (samples per configuration).
        warmup: Untimed iterations run first, interleaved the same way (excluded from the samples).
        rng_seed: Seed of the order shuffling (the order is reproducible).
        on_result: Called as ``on_result(name, return_value)`` after each timed call (outside
            the timed region), e.g. to collect per-stage timings of a ``Prediction``.

    Returns:
        name -> ``iters`` wall-clock samples in milliseconds.

    Raises:
        ValueError: no functions, ``iters < 1`` or ``warmup < 0``.
    """
    if not fns or iters < 1 or warmup < 0:
        raise ValueError(f"need functions, iters >= 1 and warmup >= 0; got {len(fns)}, {iters}, {warmup}")
    rng = random.Random(rng_seed)
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for it in range(warmup + iters):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            result = fns[name]()
            elapsed = (time.perf_counter() - start) * 1000.0
            if it >= warmup:
                samples[name].append(elapsed)
                if on_result is not None:
                    on_result(name, result)
    return samples


def stage_stats(timings: Sequence[Mapping[str, float]], *, batch: int = 1) -> dict[str, LatencyStats]:
    """Per-stage statistics from ``Prediction.timings_ms`` dicts (one per timed call).

    A stage missing from some calls (e.g. ``encoder.text`` on a cache hit) is summarized
    over the calls that have it.
    """
    stages: dict[str, list[float]] = {}
    for t in timings:
        for k, v in t.items():
            stages.setdefault(k, []).append(float(v))
    return {k: LatencyStats.from_samples(v, batch=batch) for k, v in stages.items()}
