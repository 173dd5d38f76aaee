"""What this CPU is: ``/proc/cpuinfo`` read once, for the bench's reports (``cpu_model``), the ONNX
Runtime cache's key (``ort_cache.cpu_fingerprint``) and the int8 kernels' choice (``int8_kernels``).
"""
from __future__ import annotations

import functools
import platform

__all__ = ["cpuinfo", "cpu_model", "cpu_flags"]


@functools.lru_cache(maxsize=1)
def cpuinfo() -> dict[str, str]:
    """The first value of each ``/proc/cpuinfo`` key (the first processor's); empty where it cannot be read."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in found:
                    found[key.strip()] = value.strip()
    except OSError:
        pass
    return found


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else ``platform.processor()`` or the machine)."""
    info = {key.lower(): value for key, value in cpuinfo().items()}
    return next((info[k] for k in ("model name", "hardware", "cpu model") if info.get(k)), None) \
        or platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo``; elsewhere (Windows, macOS) those of numpy's own CPU
    detection that show VNNI, in ``/proc/cpuinfo``'s names (numpy knows AVX512-VNNI, not AVX-VNNI: such a
    CPU counts as lacking VNNI); None where neither can be read."""
    info = cpuinfo()
    for key in ("flags", "Features"):
        if key in info:
            return frozenset(info[key].split())
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
