"""The bench's roofline: FLOPs counted from the bundle's graphs against a measured matmul peak."""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from mmedge.runtime.precisions import PRECISIONS
from mmedge.runtime.probes import numpy_matmul_peak

__all__ = ["roofline", "count_flops", "measure_peaks", "roofline_of"]


def roofline(flops_per_sample: float, batch: int, latency_ms: float, peak_gops: float) -> dict[str, float]:
    """How far a measured latency is from the compute floor at ``peak_gops``.

    Returns:
        ``achieved_gops`` (work done per second), ``pct_of_peak`` (100 = at the hardware limit)
        and ``floor_ms`` (the latency at the peak).
    """
    work = float(flops_per_sample) * batch
    achieved = work / (latency_ms / 1000.0) / 1e9 if latency_ms > 0 else math.inf
    return {"achieved_gops": achieved, "pct_of_peak": 100.0 * achieved / peak_gops if peak_gops > 0 else math.nan,
            "floor_ms": work / (peak_gops * 1e9) * 1000.0 if peak_gops > 0 else math.nan}


def count_flops(bundle: Any, log: Callable[[str], None]) -> tuple[dict[str, Any] | None, str]:
    """FLOPs per sample of every fp32 graph (None without onnx), and a note on how they were counted."""
    try:
        from mmedge.export.flops import FLOPS_NOTE, bundle_flops_per_sample
    except ImportError as exc:
        return None, f"not available: counting FLOPs needs onnx (pip install 'mmedge[export]'): {exc}"
    log("counting FLOPs of the fp32 graphs")
    return {k: v.to_dict() for k, v in bundle_flops_per_sample(bundle).items()}, FLOPS_NOTE


def measure_peaks(threads: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Matrix-multiply peaks: numpy fp32 always; ONNX Runtime fp32 and int8 when onnx is installed."""
    log("measuring the matrix-multiply peak")
    out: dict[str, Any] = {"numpy_fp32": numpy_matmul_peak()}
    try:
        from mmedge.export.flops import matmul_peak
    except ImportError:
        return {**out, "fp32": None, "int8": None, "note": "ORT probes need onnx; numpy fp32 only"}
    return {**out, "fp32": matmul_peak("fp32", threads=threads).to_dict(),
            "int8": matmul_peak("int8", threads=threads).to_dict(),
            "note": "fp32/int8: ONNX Runtime CPU MatMul / MatMulInteger at the bench's thread count"}


def roofline_of(record: dict[str, Any], flops: Mapping[str, Any] | None, peak: Mapping[str, Any]) -> dict[str, Any] | None:
    """A config record's roofline (end to end and compute stages); None on a GPU backend or without FLOPs."""
    if flops is None or record["backend"] not in ("ort", "torch"):
        return None  # a GPU backend: a CPU peak says nothing about it
    stages = record["stages_ms"]
    used = [k for k in stages if k.startswith(("encoder.", "head.")) and k in flops]
    timed = list(used)
    if "heads" in stages:  # the merged heads graph: every member's head in one stage
        used += [k for k in flops if k.startswith("head.") and k not in used]
        timed.append("heads")
    per_sample = float(sum(flops[k]["flops"] for k in used))
    precision = PRECISIONS[record["precision"]] if record["precision"] in PRECISIONS else None
    kind = precision.roofline_peak if precision is not None and record["backend"] == "ort" else "fp32"
    chosen = peak.get(kind) or peak["numpy_fp32"]
    compute_ms = sum(stages[k]["p50"] for k in timed)
    record["flops_per_sample"] = per_sample
    return {"peak_gops": chosen["gops"], "peak_kind": kind if peak.get(kind) else "numpy_fp32",
            "e2e": roofline(per_sample, record["batch"], record["latency_ms"]["p50"], chosen["gops"]),
            "compute": roofline(per_sample, record["batch"], compute_ms, chosen["gops"])}
