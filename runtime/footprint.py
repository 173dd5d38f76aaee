"""What a bundle costs a fresh, torch-free process: resident memory and time to first prediction.

``measure_footprint`` starts ``python -m mmedge.runtime.footprint`` in a new interpreter in
which importing torch is an error, so the figures are those of the runtime alone (the base
install on a device), never flattered or inflated by a co-resident PyTorch. The child opens
a ``Session``, runs one prediction on real inputs, and prints one JSON line. Resident memory is
read from ``/proc/self/statm`` where there is one (psutil elsewhere), so that the measuring
itself loads nothing the runtime would not; the high-water mark is ``VmHWM`` (``ru_maxrss`` off Linux).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["measure_footprint", "OPTIONAL_MODULES"]

_BLOCKED = ("torch", "onnx", "nncf")
# Libraries the runtime loads only for the bundles, modalities or backends that need them.
OPTIONAL_MODULES = ("onnxruntime", "cv2", "tokenizers", "soundfile", "PIL", "scipy", "openvino", "tensorrt",
                    "threadpoolctl", "psutil")


def measure_footprint(bundle: str | Path, precision: str, inputs: Mapping[str, Any], *, threads: int | None = None,
                      backend: str = "ort", timeout_s: float = 300.0) -> dict[str, Any]:
    """Runs ``bundle`` at ``precision`` in a fresh torch-free interpreter and measures it.

    Args:
        bundle: Bundle folder or ``.mmedge`` file.
        precision: The precision to load.
        inputs: ``Session.predict`` keyword arguments (lists of images, texts, waves; ``audio_rate``).
        threads: Backend threads (None: all cores).
        backend: The Session's backend (``"ort"``, ``"auto"``, ...).

    Returns:
        ``{"precision", "backend" (the one the Session ran), "rss_after_import_bytes",
        "rss_after_load_bytes", "rss_after_predict_bytes", "peak_rss_bytes" (high-water mark),
        "start_ms" (spawn to the child's first line: process, interpreter and numpy), "import_ms",
        "load_ms", "first_predict_ms", "first_prediction_s" (from the parent's spawn call to the
        child's first prediction: process creation and interpreter start-up included),
        "heavy_modules_imported", "modules_loaded" (which of ``OPTIONAL_MODULES`` the child loaded)}``.

    Raises:
        RuntimeError: the child process failed (its stderr is in the message).
    """
    import subprocess  # here: the child, which runs this module, does not load the parent's tools
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mmedge-footprint-") as tmp:
        npz = Path(tmp) / "inputs.npz"
        _save_inputs(npz, inputs)
        cmd = [sys.executable, "-m", "mmedge.runtime.footprint", str(bundle), precision, str(npz),
               str(threads if threads is not None else 0), backend]
        spawned = time.monotonic()  # CLOCK_MONOTONIC is system-wide: the child's readings compare with it
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"footprint child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["first_prediction_s"] = report.pop("first_prediction_monotonic") - spawned
    report["start_ms"] = (report.pop("started_monotonic") - spawned) * 1000.0
    return report


def _save_inputs(path: Path, inputs: Mapping[str, Any]) -> None:
    """``predict`` keyword arguments as arrays: a list's items as ``<name>.<index>``, other values as ``<name>``."""
    arrays: dict[str, np.ndarray] = {}
    for name, value in inputs.items():
        if isinstance(value, (list, tuple)):
            arrays.update({f"{name}.{i:05d}": np.asarray(item) for i, item in enumerate(value)})
        elif value is not None:
            arrays[name] = np.asarray(value)
    np.savez(path, **arrays)


def _load_inputs(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in sorted(z.files):
            name, _, index = key.partition(".")
            value = z[key].item() if z[key].ndim == 0 else z[key]  # texts and rates back as str / int
            if index:
                out.setdefault(name, []).append(value)
            else:
                out[name] = value
    return out


class _Blocker:
    """A meta-path finder that makes importing torch, onnx or nncf fail in the child."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in _BLOCKED:
            raise ImportError(f"{name} is blocked: the runtime must run without it")
        return None


def _rss() -> int:
    """This process's resident memory in bytes: ``/proc/self/statm`` (Linux), else psutil."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    """The high-water mark of this process's resident memory in bytes: ``VmHWM`` (Linux), else ``ru_maxrss``
    (bytes on macOS). Linux's ``ru_maxrss`` is not used there: it keeps the parent's mark across fork and exec."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _child(bundle: str, precision: str, npz: str, threads: int, backend: str) -> dict[str, Any]:
    started = time.monotonic()
    sys.meta_path.insert(0, _Blocker())
    t0 = time.perf_counter()
    from mmedge.runtime import Session

    import_ms, rss_import = (time.perf_counter() - t0) * 1000.0, _rss()
    inputs = _load_inputs(npz)
    t1 = time.perf_counter()
    with Session(bundle, precision=precision, backend=backend, threads=threads or None) as session:
        load_ms, rss_load = (time.perf_counter() - t1) * 1000.0, _rss()
        t2 = time.perf_counter()
        session.predict(**inputs)
        predict_ms, done = (time.perf_counter() - t2) * 1000.0, time.monotonic()
        rss_predict, peak, ran = _rss(), _peak_rss(), session.backend
    return {"precision": precision, "backend": ran, "rss_after_import_bytes": rss_import,
            "rss_after_load_bytes": rss_load, "rss_after_predict_bytes": rss_predict, "peak_rss_bytes": peak,
            "import_ms": import_ms, "load_ms": load_ms, "first_predict_ms": predict_ms,
            "started_monotonic": started, "first_prediction_monotonic": done,
            "heavy_modules_imported": sorted(m for m in _BLOCKED if m in sys.modules),
            "modules_loaded": [m for m in OPTIONAL_MODULES if m in sys.modules]}


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
                            sys.argv[5] if len(sys.argv) > 5 else "ort")))
