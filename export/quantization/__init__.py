"""Export policies: how export builds each reduced precision, over shared graph surgery.

| precision       | module              | target                                                  |
|-----------------|---------------------|---------------------------------------------------------|
| `fp16`          | `fp16`              | any backend (float16 compute, fp32 I/O)                 |
| `int8`          | `ort_cpu`           | ONNX Runtime CPU integer kernels (u8/s8)                |
| `int8-dynamic`  | `ort_dynamic`       | ONNX Runtime CPU, inputs quantized per call (no calibration) |
| `int8-trt`      | `tensorrt_qdq`      | TensorRT, explicit s8 symmetric Q/DQ                    |
| `int8-fp16-trt` | `tensorrt_qdq_fp16` | TensorRT, the int8-trt graph with float16 compute (Jetson) |

What each precision is (thresholds, fallbacks, TensorRT, ``mixed``) is its record in
``mmedge.runtime.precisions``; a policy is attached to a registered record. ``nncf_ptq`` is the
calibration run the int8 targets share; ``graph_surgery`` the ONNX rewrites and checks.
"""
from __future__ import annotations

from mmedge.export.quantization import fp16, ort_cpu, ort_dynamic, tensorrt_qdq, tensorrt_qdq_fp16  # noqa: F401  (register the policies)
from mmedge.export.quantization.base import POLICIES, NothingToQuantize, PrecisionPolicy, policy, register_policy
from mmedge.export.quantization.graph_surgery import assert_trt_qdq, qdq_summary
from mmedge.runtime.precisions import REFERENCE, PrecisionKind, precisions

__all__ = ["POLICIES", "NothingToQuantize", "PrecisionPolicy", "register_policy", "policy", "export_precisions", "assert_trt_qdq",
           "qdq_summary"]


def export_precisions() -> tuple[str, ...]:
    """What export can make, in order: fp32, every registered precision with a policy (built-in or
    added later: a plug-in, a test), then the selected ones (``mixed``: ``export.mixed_precision``)."""
    return tuple(p.name for p in precisions() if p.name == REFERENCE or p.name in POLICIES
                 or p.kind is PrecisionKind.SELECTED)
