"""Calls every cuda-python runtime function the TensorRT path uses, through mmedge's own code where
it has a wrapper, and prints one JSON object: what each call gave (a value, or the typed error).

Run by ``tests/runtime/test_trt_cuda.py`` in a fresh interpreter whose ``sys.path`` holds one
cuda-python install (12.x or 13.x): ``python cudart_probe.py CHAIN...`` where each CHAIN is a
``cudart`` attribute chain mmedge's source uses (``cudaMemcpyKind.cudaMemcpyHostToDevice``),
checked to exist in that cuda-python. Without a GPU every call returns an error code; the
argument types are the ones the runner passes (a ``cudaStream_t`` handle, int pointers...).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from mmedge.errors import BackendUnavailable, CudaError
from mmedge.runtime.backends.trt_cuda import (CudaStream, PinnedBuffer, capture_graph, cuda_check, cuda_error,
                                              gpu_problem, load_cudart, probe_gpu)
from mmedge.runtime.backends.trt_engines import ort_trt_cache_dir


def _outcome(call: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"ok": repr(call())}
    except (BackendUnavailable, CudaError) as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - an untyped error is what the test looks for
        return {"error": type(exc).__name__, "message": str(exc), "untyped": True}


def _raw_calls(cudart: Any) -> dict[str, Callable[[], Any]]:
    """The runner's direct cudart calls, with the argument types it passes."""
    stream, h2d = cudart.cudaStream_t(), cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    raw = {
        "cudaMemcpyAsync": lambda: cudart.cudaMemcpyAsync(0, 0, 16, h2d, stream),
        "cudaMemcpyAsync(d2h)": lambda: cudart.cudaMemcpyAsync(0, 0, 16, d2h, stream),
        "cudaStreamSynchronize": lambda: cudart.cudaStreamSynchronize(stream),
        "cudaGraphLaunch": lambda: cudart.cudaGraphLaunch(cudart.cudaGraphExec_t(), stream),
        "cudaGraphExecDestroy": lambda: cudart.cudaGraphExecDestroy(cudart.cudaGraphExec_t()),
        "cudaGraphDestroy": lambda: cudart.cudaGraphDestroy(cudart.cudaGraph_t()),
        "cudaGraphInstantiate": lambda: cudart.cudaGraphInstantiate(cudart.cudaGraph_t(), 0),
        "cudaStreamEndCapture": lambda: cudart.cudaStreamEndCapture(stream),
        "cudaStreamDestroy": lambda: cudart.cudaStreamDestroy(stream),
        "cudaFree": lambda: cudart.cudaFree(0),
        "cudaFreeHost": lambda: cudart.cudaFreeHost(0),
        "cudaMemGetInfo": cudart.cudaMemGetInfo,
    }
    return {name: (lambda f=f, name=name: cuda_check(cudart, f(), name)) for name, f in raw.items()}


def main(chains: list[str]) -> dict[str, Any]:
    """What each call gave, the missing attribute chains, and the typed error of each known code."""
    cudart = load_cudart()
    import cuda.bindings

    calls: dict[str, Callable[[], Any]] = {
        "gpu_problem": lambda: gpu_problem(cudart),
        "CudaStream.acquire": lambda: CudaStream().acquire(cudart),
        "PinnedBuffer": lambda: PinnedBuffer(cudart, 64),
        "probe_gpu": lambda: probe_gpu(cudart),
        "capture_graph": lambda: capture_graph(cudart, cudart.cudaStream_t(), lambda: True),
        "ort_trt_cache_dir": lambda: ort_trt_cache_dir(Path(tempfile.gettempdir()), ort_version="1.0").parent.name,
        **_raw_calls(cudart),
    }
    codes = ("cudaErrorInsufficientDriver", "cudaErrorNoDevice", "cudaErrorMemoryAllocation", "cudaErrorStubLibrary",
             "cudaErrorSystemDriverMismatch", "cudaErrorDevicesUnavailable", "cudaErrorInvalidValue")
    missing = []
    for chain in chains:
        value: Any = cudart
        for part in chain.split("."):
            value = getattr(value, part, None)
        if value is None:
            missing.append(chain)
    return {"version": cuda.bindings.__version__, "calls": {k: _outcome(f) for k, f in calls.items()},
            "missing": missing,
            "codes": {c: type(cuda_error(cudart, getattr(cudart.cudaError_t, c), "call")).__name__ for c in codes}}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
