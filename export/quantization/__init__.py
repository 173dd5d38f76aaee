"""Reduced precisions, one policy per target over shared graph surgery.

| precision       | module              | target                                                |
|-----------------|---------------------|-------------------------------------------------------|
| `fp16`          | `fp16`              | any backend (float16 compute, fp32 I/O)               |
| `int8`          | `ort_cpu`           | ONNX Runtime CPU integer kernels (u8/s8)              |
| `int8-trt`      | `tensorrt_qdq`      | TensorRT, explicit s8 symmetric Q/DQ                  |
| `int8-fp16-trt` | `tensorrt_qdq_fp16` | TensorRT, the same Q/DQ around float16 compute (Jetson) |

``nncf_ptq`` is the calibration run the int8 targets share; ``graph_surgery`` the ONNX
rewrites and checks. ``precisions()`` is fp32, every registered policy, then ``mixed`` (chosen, not built).
"""
from __future__ import annotations

from mmedge.export.quantization import fp16, ort_cpu, tensorrt_qdq, tensorrt_qdq_fp16  # noqa: F401  (register the policies)
from mmedge.export.quantization.base import CPU_ACCURACY, POLICIES, PrecisionPolicy, register_policy
from mmedge.export.quantization.graph_surgery import assert_trt_qdq, qdq_summary

__all__ = ["CPU_ACCURACY", "POLICIES", "PRECISIONS", "PrecisionPolicy", "register_policy", "policy", "precisions",
           "assert_trt_qdq", "qdq_summary"]

PRECISIONS: tuple[str, ...] = ("fp32", *POLICIES, "mixed")  # the built-in ones; see precisions()


def precisions() -> tuple[str, ...]:
    """fp32, every registered policy (built-in or added later: a plug-in, a test), and ``mixed``
    (per component, the fastest graph within the accuracy budget: ``export.mixed_precision``)."""
    return ("fp32", *POLICIES, "mixed")


def policy(precision: str) -> PrecisionPolicy:
    """The policy that builds ``precision`` (a ``RegistryError`` lists the valid ones)."""
    return POLICIES[precision]
