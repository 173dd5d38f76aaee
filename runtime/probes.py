"""Device probes for benchmarks: memory, tegrastats, matmul peak, import time, environment.

numpy + psutil only (never torch or onnx): they run on a device with the base install.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmedge.runtime.cpu import cpu_model

__all__ = ["rss_bytes", "peak_rss_bytes", "TegrastatsSampler", "parse_tegrastats", "numpy_matmul_peak",
           "measure_import_ms", "environment"]


def rss_bytes() -> int:
    """Current resident set size of this process, in bytes (psutil)."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes.

    ``getrusage``'s high-water mark, which the kernel updates lazily: never less than the current RSS.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(int(peak if sys.platform == "darwin" else peak * 1024), rss_bytes())  # Linux reports KiB


_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)mW/(\d+)mW")
_RAIL_OLD = re.compile(r"\b((?:VDD|POM)_[A-Z0-9_]+)\s+(\d+)/(\d+)\b")
_GR3D = re.compile(r"\bGR3D_FREQ\s+(\d+)%")
_RAM = re.compile(r"\bRAM\s+(\d+)/(\d+)MB")


def parse_tegrastats(line: str) -> dict[str, Any]:
    """Parses one ``tegrastats`` line: GPU load (%), power rails (mW, instantaneous), RAM (MB).

    Handles the JetPack 5/6 form (``VDD_IN 5000mW/5000mW``) and the older one (``POM_5V_IN 3000/3000``).
    """
    out: dict[str, Any] = {}
    if (m := _GR3D.search(line)) is not None:
        out["gpu_load_pct"] = float(m.group(1))
    rails = {name: float(now) for name, now, _ in _RAIL.findall(line) + _RAIL_OLD.findall(line)}
    if rails:
        out["power_mw"] = rails
    if (m := _RAM.search(line)) is not None:
        out["ram_used_mb"] = float(m.group(1))
    return out


class TegrastatsSampler:
    """Samples ``tegrastats`` in the background while a benchmark runs (Jetson only).

    Without ``tegrastats`` on the PATH it does nothing, and ``summary()`` says "not available".
    Use as a context manager.
    """

    def __init__(self, interval_ms: int = 100) -> None:
        self.interval_ms = interval_ms
        self.samples: list[dict[str, Any]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self.available = shutil.which("tegrastats") is not None

    def __enter__(self) -> "TegrastatsSampler":
        if self.available:
            try:
                self._proc = subprocess.Popen(["tegrastats", "--interval", str(self.interval_ms)],
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError:
                self.available = False
                return self
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parsed = parse_tegrastats(line)
            if parsed:
                self.samples.append(parsed)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def summary(self) -> dict[str, Any]:
        """Mean/max GPU load and mean power per rail over the samples, or why there are none."""
        if not self.available:
            return {"available": False, "note": "not available (no tegrastats on PATH: not a Jetson)"}
        loads = [s["gpu_load_pct"] for s in self.samples if "gpu_load_pct" in s]
        rails: dict[str, list[float]] = {}
        for s in self.samples:
            for k, v in s.get("power_mw", {}).items():
                rails.setdefault(k, []).append(v)
        return {"available": True, "samples": len(self.samples), "interval_ms": self.interval_ms,
                "gpu_load_pct": {"mean": float(np.mean(loads)), "max": float(np.max(loads))} if loads else None,
                "power_mw_mean": {k: float(np.mean(v)) for k, v in rails.items()}}


def numpy_matmul_peak(sizes: Sequence[int] = (256, 512, 1024), repeats: int = 5) -> dict[str, Any]:
    """Best float32 GEMM throughput of numpy's BLAS (its own default threads), in GFLOP/s.

    fp32 only: an int8 probe needs an ONNX graph (``mmedge.export.flops.matmul_peak``), and
    the runtime never imports onnx.
    """
    rng = np.random.default_rng(0)
    best, best_n = 0.0, 0
    for n in sizes:
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        a @ b  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            gflops = 2.0 * n ** 3 / (time.perf_counter() - start) / 1e9
            if gflops > best:
                best, best_n = gflops, n
    return {"gops": best, "size": best_n,
            "method": f"numpy float32 matmul (BLAS default threads), best of {repeats} runs at n={best_n}"}


def measure_import_ms(statement: str = "import mmedge.runtime", *, repeats: int = 3) -> dict[str, Any]:
    """Median time of ``statement`` in fresh interpreters (interpreter start-up excluded).

    Returns:
        ``{"statement", "median_ms", "samples_ms", "torch_imported"}``; ``torch_imported`` tells
        whether the statement pulled in torch (it must not, for the runtime).
    """
    code = ("import sys, time; t = time.perf_counter(); " + statement +
            "; print((time.perf_counter() - t) * 1000.0, 'torch' in sys.modules)")
    samples, torch_seen = [], False
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
        ms, seen = out.stdout.split()[-2:]
        samples.append(float(ms))
        torch_seen = torch_seen or seen == "True"
    return {"statement": statement, "median_ms": float(np.median(samples)), "samples_ms": samples,
            "torch_imported": torch_seen}


_ENV_PREFIXES = ("OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "ORT_", "MMEDGE_", "CUDA_", "TORCH_")
_PACKAGES = ("mmedge", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "nncf", "tensorrt", "tensorrt-cu12",
             "tensorrt-cu13", "cuda-python", "cuda-bindings", "tokenizers", "opencv-python-headless", "psutil")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(threads: int) -> dict[str, Any]:
    """What a reader needs to reproduce a run: versions, CPU, threads, thread env vars, date."""
    import psutil

    try:
        import onnxruntime as ort
        providers = list(ort.get_available_providers())
    except ImportError:  # pragma: no cover - the base install has it
        providers = []
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_model": cpu_model(),
            "cpu_count_logical": os.cpu_count(), "cpu_count_physical": psutil.cpu_count(logical=False),
            "versions": {p: _version(p) for p in _PACKAGES},
            "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
            "threads": {"ort_intra_op": threads}, "ort_providers": providers,
            "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
