"""Benchmark harness primitives: statistics, interleaved timing, memory, tegrastats, peaks.

numpy + psutil only (never torch or onnx), so a device with the base install can time itself.
``mmedge.benchmark`` (the ``mmedge bench`` command) builds on these.

Honesty rules the functions follow: warm-up runs are never in the samples; configurations
are timed interleaved in a fresh random order each iteration, so drift (thermal, other
processes) hits all of them alike; medians are the quoted figure; nothing is timed twice
and averaged away.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["LatencyStats", "run_interleaved", "stage_stats", "rss_bytes", "peak_rss_bytes", "TegrastatsSampler",
           "parse_tegrastats", "numpy_matmul_peak", "measure_import_ms", "roofline", "environment",
           "comparisons", "validate_report", "write_json", "SCHEMA"]

SCHEMA = "mmedge.bench/1"


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


def _ratio(a: Mapping[str, Any], b: Mapping[str, Any], name: str) -> dict[str, Any]:
    shared = sorted(set(a["stages_ms"]) & set(b["stages_ms"]))
    return {"name": name, "batch": a["batch"], "numerator": a["id"], "denominator": b["id"],
            "ratio_p50": a["latency_ms"]["p50"] / b["latency_ms"]["p50"],
            "stage_ratios_p50": {k: a["stages_ms"][k]["p50"] / b["stages_ms"][k]["p50"] for k in shared
                                 if b["stages_ms"][k]["p50"] > 0}}


def comparisons(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ratios of medians between configuration records of one run, per batch size.

    Runtime ensemble / PyTorch eager, each precision / fp32 on the same backend, and the
    ensemble / its best single member; each with per-stage ratios of the stages both have.
    """
    out = []
    by_batch: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_batch.setdefault(r["batch"], []).append(r)
    for group in by_batch.values():
        torch_rec = next((r for r in group if r["kind"] == "torch"), None)
        ensembles = [r for r in group if r["kind"] == "ensemble"]
        fp32 = {r["backend"]: r for r in ensembles if r["precision"] == "fp32"}
        for r in ensembles:
            where = f"{r['precision']}/{r['backend']}"
            if torch_rec is not None:
                out.append(_ratio(r, torch_rec, f"runtime {where} / PyTorch eager"))
            if r["precision"] != "fp32" and r["backend"] in fp32:
                out.append(_ratio(r, fp32[r["backend"]], f"{where} / fp32/{r['backend']}"))
            member = next((m for m in group if m["kind"] == "member" and m["id"].startswith(where + "/")), None)
            if member is not None:
                out.append(_ratio(r, member, f"ensemble {where} / best single member {member['members'][0]}"))
    return out


_ENV_PREFIXES = ("OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "ORT_", "MMEDGE_", "CUDA_", "TORCH_")
_PACKAGES = ("mmedge", "numpy", "onnxruntime", "onnx", "torch", "nncf", "tensorrt", "tokenizers",
             "opencv-python-headless", "psutil")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_model": _cpu_model(),
            "cpu_count_logical": os.cpu_count(), "cpu_count_physical": psutil.cpu_count(logical=False),
            "versions": {p: _version(p) for p in _PACKAGES},
            "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
            "threads": {"ort_intra_op": threads}, "ort_providers": providers,
            "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


_TOP = {"schema": str, "created_utc": str, "command": list, "settings": dict, "environment": dict, "bundle": dict,
        "data": dict, "import": list, "peak": dict, "flops": dict, "configs": list, "accuracy": dict,
        "comparisons": list, "memory": dict, "device": dict}
_CONFIG = {"id": str, "kind": str, "precision": str, "backend": str, "batch": int, "members": list, "threads": int,
           "load_ms": (int, float), "rss_delta_bytes": int, "latency_ms": dict, "stages_ms": dict,
           "samples_ms": list, "roofline": (dict, type(None))}
_NUMBER = (int, float)


def _check_keys(obj: Any, spec: Mapping[str, Any], where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where} must be an object"]
    errors = [f"{where}.{k} is missing" for k in spec if k not in obj]
    errors += [f"{where}.{k} must be {t}" for k, t in spec.items() if k in obj and not isinstance(obj[k], t)]
    return errors


def _check_stats(stats: Any, where: str) -> list[str]:
    spec = {k: _NUMBER for k in ("n", "batch", "p50", "p90", "p99", "mean", "min", "max", "std", "throughput_per_s")}
    errors = _check_keys(stats, spec, where)
    if not errors and not stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]:
        errors.append(f"{where}: expected min <= p50 <= p90 <= p99 <= max")
    return errors


def validate_report(report: Any) -> list[str]:
    """Checks a ``mmedge bench`` JSON report against ``mmedge.bench/1``; returns the problems (empty: valid)."""
    errors = _check_keys(report, _TOP, "report")
    if errors:
        return errors
    if report["schema"] != SCHEMA:
        errors.append(f"report.schema is {report['schema']!r}, expected {SCHEMA!r}")
    env = report["environment"]
    errors += _check_keys(env, {"cpu_model": str, "versions": dict, "env": dict, "threads": dict}, "environment")
    errors += _check_keys(report["bundle"], {"sha256": str, "size_bytes": int, "path": str}, "bundle")
    for i, cfg in enumerate(report["configs"]):
        where = f"configs[{i}]"
        errs = _check_keys(cfg, _CONFIG, where)
        if not errs:
            errs += _check_stats(cfg["latency_ms"], f"{where}.latency_ms")
            errs += [e for k, v in cfg["stages_ms"].items() for e in _check_stats(v, f"{where}.stages_ms.{k}")]
            if len(cfg["samples_ms"]) != cfg["latency_ms"]["n"]:
                errs.append(f"{where}: samples_ms has {len(cfg['samples_ms'])} values, latency_ms.n is "
                            f"{cfg['latency_ms']['n']}")
        errors += errs
    for i, c in enumerate(report["comparisons"]):
        errors += _check_keys(c, {"name": str, "batch": int, "ratio_p50": _NUMBER, "numerator": str,
                                  "denominator": str}, f"comparisons[{i}]")
    return errors


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    """Writes ``report`` as indented JSON (non-finite numbers as null); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(report), indent=1) + "\n", encoding="utf-8")
    return path
