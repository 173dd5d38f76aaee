"""The parts of ``benchmarks/gpu_check.sh``: each one runs, or is skipped with its reason.

    python3 benchmarks/gpu_parts.py --work DIR [--bundle BUNDLE] [--timeout S] [-- gpu_check.py options]

| part          | needs                                   | does                                              |
|---------------|-----------------------------------------|---------------------------------------------------|
| `cuda-python` | cuda-python, a GPU CUDA can use          | ``probe_gpu``, the Session stream, pinned buffers: a 1 MiB round trip |
| `cuda-graph`  | the same                                | a copy captured into a CUDA graph on that stream, replayed |
| `ort-cuda`    | onnxruntime-gpu's CUDA EP, a bundle      | ``backend="ort-cuda"`` (strict) against ``ort`` on CPU |
| `ort-trt`     | onnxruntime-gpu's TensorRT EP, a bundle  | ``backend="ort-trt"`` (strict): cache folders, engines, vs CPU |
| `tensorrt`    | TensorRT, cuda-python, a GPU, a bundle   | ``gpu_check.py``: build every TensorRT precision into DIR/engines, fidelity, latency |

A bundle is made (a short digits-match training, then export) into ``DIR/bundle`` only when a
part that got that far needs one and none was given; without the export extras those parts are
skipped, saying so. Prints one line per part (``ran`` / ``skipped: why`` / ``FAILED: error``); the
exit status is 1 when a part that ran failed, else 0 (every part skipped included).
Torch-free itself: it runs where only the runtime and the GPU packages are installed.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPORT_MODULES = ("torch", "onnx", "onnxscript", "nncf", "transformers")
TRT_PRECISIONS = "fp32,fp16,int8-trt,int8-fp16-trt"


@dataclass
class Context:
    """What the parts share: the work folder, the bundle (given, or made on first need), options."""

    work: Path
    bundle_arg: Path | None = None
    timeout: float = 2400.0
    check_args: list[str] = field(default_factory=list)
    _bundle: Path | None = None
    _bundle_problem: str | None = None
    _bundle_failed: bool = False

    def bundle(self) -> Path:
        """The bundle to check; made on first call when none was given.

        Raises:
            PartSkipped: none given and none can be made here (no export extras).
            RuntimeError: making one failed (the parts that need it fail: something is broken).
        """
        if self._bundle is None and self._bundle_problem is None:
            self._bundle, self._bundle_problem = _given_or_made(self)
            self._bundle_failed = self._bundle is None and self._bundle_problem.startswith("making a bundle failed")
        if self._bundle is None:
            raise (RuntimeError if self._bundle_failed else PartSkipped)(self._bundle_problem or "no bundle")
        return self._bundle


class PartSkipped(Exception):
    """A part cannot run here; the message says why."""


def _given_or_made(ctx: Context) -> tuple[Path | None, str | None]:
    if ctx.bundle_arg is not None:
        found = (ctx.bundle_arg / "manifest.json").is_file() or ctx.bundle_arg.is_file()
        return (ctx.bundle_arg, None) if found else (None, f"no bundle at {ctx.bundle_arg}")
    made = ctx.work / "bundle"
    if (made / "manifest.json").is_file():
        return made, None
    missing = [m for m in EXPORT_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return None, (f"no bundle given (first argument or BUNDLE=...) and making one needs the export extras, "
                      f"missing here: {', '.join(missing)} (pip install 'mmedge[export]')")
    run = ctx.work / "run"
    steps = [[sys.executable, "-m", "mmedge", "train", "--recipe", "digits-match", "--subset", "60", "--epochs", "1",
              "-o", str(run)],
             [sys.executable, "-m", "mmedge", "export", str(run), "-o", str(made), "--precision",
              "fp32,int8,fp16,int8-trt,int8-fp16-trt", "--calib-samples", "32", "--eval-samples", "20"]]
    for step in steps:
        print(f"  making a bundle: {' '.join(step[1:])}", flush=True)
        out = subprocess.run(step, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            return None, f"making a bundle failed ({' '.join(step[2:4])}): {out.stderr.strip()[-600:]}"
    return made, None


# -- what a part needs ------------------------------------------------------------------------


def _cudart() -> Any:
    from mmedge.errors import BackendUnavailable
    from mmedge.runtime.backends.trt_cuda import gpu_problem, load_cudart

    try:
        cudart = load_cudart()
    except BackendUnavailable as exc:
        raise PartSkipped(f"cuda-python is not installed ({exc.__cause__})") from None
    problem = gpu_problem(cudart)
    if problem:
        raise PartSkipped(problem)
    return cudart


def _provider(name: str) -> None:
    import onnxruntime as ort

    have = ort.get_available_providers()
    if name not in have:
        raise PartSkipped(f"onnxruntime {ort.__version__} has no {name} (available: {have}); install onnxruntime-gpu")
    _cudart_or_torch_gpu()


def _cudart_or_torch_gpu() -> None:
    """Skips unless a GPU is usable: cuda-python's view, or ``nvidia-smi -L`` where cuda-python is missing."""
    try:
        _cudart()
        return
    except PartSkipped as exc:
        if "not installed" not in str(exc):
            raise
        why = str(exc)
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PartSkipped(f"{why}, and nvidia-smi cannot be run ({exc}): no NVIDIA GPU to use") from None
    if "GPU " not in listed:
        raise PartSkipped(f"{why}, and nvidia-smi -L lists no GPU")


# -- the parts --------------------------------------------------------------------------------


def part_cuda(ctx: Context) -> str:
    """probe_gpu, the Session's non-blocking stream and pinned buffers: a 1 MiB round trip."""
    from mmedge.runtime.backends.trt_cuda import CudaStream, PinnedBuffer, cuda_check, probe_gpu

    cudart = _cudart()
    name, capability = probe_gpu(cudart)
    stream, n = CudaStream(), 1 << 20
    handle = stream.acquire(cudart)
    src, dst = PinnedBuffer(cudart, n), PinnedBuffer(cudart, n)
    try:
        data = np.random.default_rng(0).integers(0, 255, n, dtype=np.uint8)
        np.copyto(src.host_array((n,), np.uint8), data)
        kind = cudart.cudaMemcpyKind
        cuda_check(cudart, cudart.cudaMemcpyAsync(src.device, src.host, n, kind.cudaMemcpyHostToDevice, handle))
        cuda_check(cudart, cudart.cudaMemcpyAsync(dst.host, src.device, n, kind.cudaMemcpyDeviceToHost, handle))
        cuda_check(cudart, cudart.cudaStreamSynchronize(handle))
        if not np.array_equal(dst.host_array((n,), np.uint8), data):
            raise AssertionError("the pinned round trip returned other bytes")
    finally:
        src.free(), dst.free(), stream.release()
    return f"{name} (compute capability {capability}): non-blocking stream, pinned 1 MiB round trip equal"


def part_cuda_graph(ctx: Context) -> str:
    """A device-to-device copy captured into a CUDA graph on the Session stream, replayed twice."""
    from mmedge.runtime.backends.trt_cuda import CudaStream, PinnedBuffer, capture_graph, cuda_check

    cudart = _cudart()
    stream, n = CudaStream(), 4096
    handle = stream.acquire(cudart)
    a, b = PinnedBuffer(cudart, n), PinnedBuffer(cudart, n)
    kind, ok = cudart.cudaMemcpyKind, cudart.cudaError_t.cudaSuccess
    try:
        graph = capture_graph(cudart, handle, lambda: cudart.cudaMemcpyAsync(
            b.device, a.device, n, kind.cudaMemcpyDeviceToDevice, handle)[0] == ok)
        for value in (7, 9):
            a.host_array((n,), np.uint8)[:] = value
            cuda_check(cudart, cudart.cudaMemcpyAsync(a.device, a.host, n, kind.cudaMemcpyHostToDevice, handle))
            cuda_check(cudart, cudart.cudaGraphLaunch(graph, handle))
            cuda_check(cudart, cudart.cudaMemcpyAsync(b.host, b.device, n, kind.cudaMemcpyDeviceToHost, handle))
            cuda_check(cudart, cudart.cudaStreamSynchronize(handle))
            if not (b.host_array((n,), np.uint8) == value).all():
                raise AssertionError(f"the replayed graph did not copy {value}")
        cudart.cudaGraphExecDestroy(graph)
    finally:
        a.free(), b.free(), stream.release()
    return "captured once, replayed twice with new data: equal"


def _sample(modalities: Any, specs: Any, rng: np.random.Generator, n: int) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if "image" in modalities:
        given["image"] = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]
    if "text" in modalities:
        given["text"] = ["a photo of the digit seven", "three", "zero", "one"][:n]
    if "audio" in modalities:
        rate = specs["audio"].sample_rate
        given.update(audio=[(rng.standard_normal(rate) * 0.1).astype(np.float32) for _ in range(n)], audio_rate=rate)
    return given


def _against_cpu(ctx: Context, backend: str, **options: Any) -> str:
    from mmedge.runtime import Bundle, Session

    with Bundle.open(ctx.bundle()) as opened:
        modalities, specs = opened.modalities, opened.specs
    worst, rng, source = 0.0, np.random.default_rng(0), ctx.bundle()
    with Session(source, backend=backend, strict=True, **options) as gpu, Session(source, backend="ort") as cpu:
        for n in (1, 2, 1):
            given = _sample(modalities, specs, rng, n)
            got, want = gpu.predict(**given), cpu.predict(**given)
            worst = max(worst, float(np.abs(np.asarray(got.probabilities) - np.asarray(want.probabilities)).max()))
        backend_used = gpu.backend
    if backend_used != backend or worst > 2e-2:
        raise AssertionError(f"{backend}: ran as {backend_used!r}, max |probability difference| vs CPU {worst:.3g}")
    return f"batches 1, 2, 1 on {backend_used}: max |probability difference| vs CPU {worst:.2g}"


def part_ort_cuda(ctx: Context) -> str:
    """ONNX Runtime's CUDA EP (strict: no quiet CPU fallback) against the CPU EP."""
    _provider("CUDAExecutionProvider")
    return _against_cpu(ctx, "ort-cuda")


def part_ort_trt(ctx: Context) -> str:
    """ONNX Runtime's TensorRT EP: the cache folder (with parents), engines written there, vs CPU."""
    from mmedge.runtime.backends.trt_engines import ort_trt_cache_dir

    _provider("TensorrtExecutionProvider")
    root = ctx.work / "ort-engines"
    detail = _against_cpu(ctx, "ort-trt", engine_dir=root)
    cache = ort_trt_cache_dir(root)
    files = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
    if not files:
        raise AssertionError(f"ONNX Runtime's TensorRT EP wrote nothing to its cache folder {cache}")
    return f"{detail}; {len(files)} cache files in {cache}"


def part_tensorrt(ctx: Context) -> str:
    """gpu_check.py: build every TensorRT precision into DIR/engines, fidelity against ORT, latency."""
    from mmedge.runtime.backends.trt import EngineLoader

    problem = EngineLoader.availability()
    if problem:
        raise PartSkipped(problem)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), str(ctx.bundle()),
           "--engine-dir", str(ctx.work / "engines"), *ctx.check_args]
    try:
        out = subprocess.run(cmd, timeout=ctx.timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"gpu_check.py ran past {ctx.timeout:.0f} s (TIMEOUT=...): {' '.join(cmd)}") from None
    if out.returncode != 0:
        raise AssertionError(f"gpu_check.py exited {out.returncode}: {' '.join(cmd)}")
    return f"engines in {ctx.work / 'engines'}; figures above"


PARTS: dict[str, Callable[[Context], str]] = {"cuda-python": part_cuda, "cuda-graph": part_cuda_graph,
                                              "ort-cuda": part_ort_cuda, "ort-trt": part_ort_trt,
                                              "tensorrt": part_tensorrt}


def run_parts(ctx: Context, parts: dict[str, Callable[[Context], str]] = PARTS) -> dict[str, tuple[str, str]]:
    """Part -> (``"ran"`` | ``"skipped"`` | ``"failed"``, detail), printed as it goes."""
    results = {}
    for name, part in parts.items():
        start = time.perf_counter()
        try:
            results[name] = ("ran", part(ctx))
        except PartSkipped as exc:
            results[name] = ("skipped", str(exc))
        except Exception as exc:  # noqa: BLE001 - a part that ran and failed is reported, the others still run
            traceback.print_exc()
            results[name] = ("failed", f"{type(exc).__name__}: {exc}")
        status, detail = results[name]
        label = {"ran": "ran", "skipped": "skipped:", "failed": "FAILED:"}[status]
        print(f"[{name:<11}] {label} {detail} ({time.perf_counter() - start:.1f} s)", flush=True)
    return results


def main(argv: list[str], parts: dict[str, Callable[[Context], str]] = PARTS) -> int:
    """Runs the parts; 1 when one that ran failed, else 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="engines, caches and a made bundle go here")
    p.add_argument("--bundle", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=2400.0, help="seconds for the tensorrt part (~20 cold builds)")
    args, check_args = p.parse_known_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = run_parts(Context(args.work, args.bundle, args.timeout, [a for a in check_args if a != "--"]), parts)
    counts = {s: sum(1 for v, _ in results.values() if v == s) for s in ("ran", "skipped", "failed")}
    print(f"gpu_check: {counts['ran']} ran, {counts['skipped']} skipped, {counts['failed']} failed", flush=True)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
