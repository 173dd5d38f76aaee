"""Fair baselines: the rules every published ratio is measured under, on both sides.

- **One BLAS thread.** numpy's OpenBLAS pool busy-waits after each matmul and, on a small CPU,
  fights PyTorch's OpenMP pool (or ONNX Runtime's) for the cores: the reference PyTorch ensemble
  alone in its process gave p50 92-120 ms with OpenBLAS at its default and 18.7 ms with one BLAS
  thread. The PyTorch process (eager and ``torch.compile``) and the runtime's own process are
  each timed under ``limit_blas()``; ``thread_settings()`` records what each side really ran with.
- **The same text padding.** The runtime pads text to the batch's longest, rounded up to a
  multiple of ``Session.length_buckets["text"]``; the baseline's ``TorchReference`` gets the same
  bucket (``runtime_padding``), so both encode token tensors of the same length for the same rows.
- **Disturbed runs are flagged.** A configuration whose p90/p50 exceeds ``DISTURBED_P90_OVER_P50``
  was disturbed (another process, a thread fight): ``mark_disturbed`` says so in its record.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from mmedge.bench.options import BenchOptions

__all__ = ["BLAS_THREADS", "DISTURBED_P90_OVER_P50", "limit_blas", "thread_settings", "runtime_padding", "report_lines",
           "mark_disturbed", "disturbed_ids"]

BLAS_THREADS = 1
DISTURBED_P90_OVER_P50 = 1.3
_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas(threads: int = BLAS_THREADS) -> Any:
    """A context manager holding the BLAS libraries loaded now to ``threads`` threads (enter it after loading
    the models, so that every library is seen): the runtime's own
    ``BlasLimit``, which restores only BLAS on exit (threadpoolctl's ``threadpool_limits`` also resets
    OpenMP, hence torch's intra-op threads)."""
    from mmedge.runtime.blas_threads import BlasLimit, refresh_blas_libraries

    refresh_blas_libraries()  # every BLAS loaded by now (scipy's, torch's), not only numpy's
    return BlasLimit(threads)


def thread_settings(*, ort_threads: int | None = None) -> dict[str, Any]:
    """The thread pools of this process as they are now: BLAS and OpenMP libraries, torch's intra-op
    threads (when torch is loaded), ONNX Runtime's intra-op threads (as the bench set them), the environment."""
    from threadpoolctl import threadpool_info

    pools = [{"user_api": i["user_api"], "internal_api": i["internal_api"], "num_threads": int(i["num_threads"])}
             for i in threadpool_info()]
    out: dict[str, Any] = {"pools": pools, "blas_threads": _threads_of(pools, "blas"),
                           "env": {k: os.environ.get(k) for k in _ENV}}
    if "torch" in sys.modules:
        out["torch_intra_op"] = int(sys.modules["torch"].get_num_threads())
    if ort_threads is not None:
        out["ort_intra_op"] = int(ort_threads)
    return out


def _threads_of(pools: list[Mapping[str, Any]], api: str) -> int | None:
    counts = {p["num_threads"] for p in pools if p["user_api"] == api}
    return max(counts) if counts else None


def runtime_padding(opts: BenchOptions) -> dict[str, int]:
    """How the runtime pads each modality of ``opts.bundle`` (``Session.length_buckets``), read from a
    Session opened on its first precision and backend: what the baseline is told to match."""
    from mmedge.runtime import Session

    with Session(opts.bundle, precision=opts.precisions[0], backend=opts.backends[0], threads=1,
                 text_cache_size=0) as session:
        return session.length_buckets


def mark_disturbed(record: dict[str, Any]) -> dict[str, Any]:
    """Adds ``p90_over_p50`` and ``disturbed`` (p90/p50 > ``DISTURBED_P90_OVER_P50``) to a config record."""
    lat = record["latency_ms"]
    spread = lat["p90"] / lat["p50"] if lat["p50"] > 0 else float("inf")
    record["p90_over_p50"] = spread
    record["disturbed"] = bool(spread > DISTURBED_P90_OVER_P50)
    return record


def disturbed_ids(records: list[Mapping[str, Any]]) -> list[str]:
    """The ids of the configuration records flagged disturbed."""
    return [r["id"] for r in records if r.get("disturbed")]


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """Plain lines for ``mmedge bench``'s output: the rules both sides ran under, disturbed configurations,
    and the ``--background-load`` comparison."""
    lines = []
    fair = report.get("fairness")
    if fair:
        sides = "; ".join(f"{side}: BLAS {t.get('blas_threads')}" + (f", torch {t['torch_intra_op']}"
                                                                      if "torch_intra_op" in t else "")
                          for side, t in fair["thread_settings"].items())
        lines.append(f"fair baseline: one BLAS thread on both sides ({sides}); text padded to multiples of "
                     f"{fair['text_padding']['runtime'].get('text', 0) or 'max_length'} on both sides")
        if fair["disturbed"]:
            lines.append(f"disturbed (p90/p50 > {fair['disturbed_p90_over_p50']}): {', '.join(fair['disturbed'])}")
    for cid, c in (report.get("background_load") or {}).get("configs", {}).items():
        lines.append(f"beside a numpy load, {cid}: p50 {c['without']['p50']:.2f} -> {c['with']['p50']:.2f} ms, "
                     f"p99 {c['without']['p99']:.2f} -> {c['with']['p99']:.2f} ms, p90/p50 {c['p90_over_p50_with']:.2f}")
    return lines
