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

import functools
import platform

__all__ = ["X86_MACHINES", "VNNI_FLAGS", "SaturatingInt8Warning", "cpu_flags", "int8_pairs_saturate"]

X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})  # /proc/cpuinfo names of int32-accumulating u8 x s8


class SaturatingInt8Warning(UserWarning):
    """An int8 graph runs where its products may saturate (OpenVINO asked for by name on such a CPU)."""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo``; elsewhere (Windows, macOS) those of numpy's own CPU
    detection that show VNNI, in ``/proc/cpuinfo``'s names (numpy knows AVX512-VNNI, not AVX-VNNI: such a
    CPU counts as lacking VNNI, and gets the exact, slower kernels); None where neither can be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return _numpy_flags()


def _numpy_flags() -> frozenset[str] | None:
    try:  # numpy's table of the CPU's features (a private module, present in numpy 1.x and 2.x)
        from numpy._core._multiarray_umath import __cpu_features__ as found
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as found
        except ImportError:
            return None
    return frozenset({"avx512_vnni"} if found.get("AVX512VNNI") else set()) | {"numpy-detected"}


def int8_pairs_saturate() -> bool:
    """Whether u8 x s8 kernels may saturate here: an x86 CPU without VNNI, or one whose flags cannot be
    read (assumed to lack it)."""
    if platform.machine().lower() not in X86_MACHINES:
        return False
    flags = cpu_flags()
    return flags is None or not (flags & VNNI_FLAGS)
