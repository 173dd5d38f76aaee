"""Whether this CPU's 8-bit integer kernels are exact: x86 CPUs without VNNI saturate.

A u8 x s8 matrix product on an x86 CPU without VNNI (AVX2 only: many edge boxes, AMD Zen 2/3,
Intel before Ice Lake) is computed with ``vpmaddubsw``, which adds the products in pairs into a
saturating int16: 255 * 127 * 2 does not fit. VNNI (``vpdpbusd``), ARM and TensorRT accumulate in
int32. Measured on the reference image encoder's int8 graph (8-bit weights) on an AVX2-only AMD
EPYC: min cosine to fp32 0.9418 on ONNX Runtime's default kernels, against 0.9957 on the exact ones
(``benchmarks/image_int8_fidelity.py``, ``benchmarks/RESULTS.md``).

ONNX Runtime computes such graphs exactly when asked (``session.x64quantprecision``: its
``Avx2WeightS8ToU8`` rewrite moves the weights to u8 and the products to u8 x u8 kernels, which
widen to int16 before multiplying); ``mmedge.runtime.backends.ort.session_options`` asks where
``int8_pairs_saturate`` (ONNX Runtime would apply it on every x86 CPU with AVX2, giving up VNNI's faster
exact kernels). OpenVINO has no such option, so ``auto`` and ``mixed`` keep int8 graphs off OpenVINO's
CPU device on these CPUs (``OpenVINOLoader.missing``). Triton's ONNX Runtime backend cannot be given
the option either: serve int8 bundles on such CPUs with ``graph_backend="python"``
(``mmedge.serve.model_repository``), whose sessions are the runtime's.
"""
from __future__ import annotations

import platform

from mmedge.runtime.cpu import cpu_flags

__all__ = ["X86_MACHINES", "VNNI_FLAGS", "SaturatingInt8Warning", "int8_pairs_saturate"]

X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})  # /proc/cpuinfo names of int32-accumulating u8 x s8


class SaturatingInt8Warning(UserWarning):
    """An int8 graph runs where its products may saturate (OpenVINO asked for by name on such a CPU)."""


def int8_pairs_saturate() -> bool:
    """Whether u8 x s8 kernels may saturate here: an x86 CPU without VNNI, or one whose flags cannot be
    read (assumed to lack it; ``mmedge.runtime.cpu.cpu_flags``)."""
    if platform.machine().lower() not in X86_MACHINES:
        return False
    flags = cpu_flags()
    return flags is None or not (flags & VNNI_FLAGS)
