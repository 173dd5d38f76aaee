"""Whether this CPU's 8-bit integer kernels are exact: x86 CPUs without VNNI saturate.

A u8 x s8 matrix product on an x86 CPU without VNNI (AVX2 only: many edge boxes, AMD Zen 2/3,
Intel before Ice Lake) is computed with ``vpmaddubsw``, which adds the products in pairs into a
saturating int16: 255 * 127 * 2 does not fit. VNNI (``vpdpbusd``), ARM and TensorRT accumulate in
int32. Measured on the reference image encoder's int8 graph (8-bit weights) on an AVX2-only AMD
EPYC: min cosine to fp32 0.9418 on ONNX Runtime's default kernels and 0.9409 on OpenVINO's, against
0.9954 for the same graph computed exactly (``benchmarks/image_int8_fidelity.py``).

ONNX Runtime computes such graphs exactly when asked (``session.x64quantprecision``: its
``Avx2WeightS8ToU8`` rewrite moves the weights to u8 and the products to u8 x u8 kernels, which
widen to int16 before multiplying); ``mmedge.runtime.backends.ort.session_options`` always asks, and
the option does nothing on other CPUs. OpenVINO has no such option, so ``auto`` keeps int8 graphs off
OpenVINO's CPU device on these CPUs (``OpenVINOLoader.missing``).
"""
from __future__ import annotations

import functools
import platform

__all__ = ["X86_MACHINES", "VNNI_FLAGS", "cpu_flags", "int8_pairs_saturate"]

X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})  # /proc/cpuinfo names of int32-accumulating u8 x s8


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (None where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def int8_pairs_saturate() -> bool:
    """Whether u8 x s8 kernels may saturate here: an x86 CPU without VNNI, or one whose flags cannot be
    read (assumed to lack it)."""
    if platform.machine().lower() not in X86_MACHINES:
        return False
    flags = cpu_flags()
    return flags is None or not (flags & VNNI_FLAGS)
