"""CUDA for the TensorRT backend, through cuda-python's runtime module (``cudart``).

Every cudart call returns ``(cudaError_t, *values)``; ``cuda_check`` turns an error code into a
typed error whose message says what to do: a driver too old for the installed cuda-python
(``cudaErrorInsufficientDriver``), no GPU, or another failed call. ``CudaStream`` is the one
**non-blocking** stream of a Session (work that another library queues on the legacy default
stream cannot invalidate a CUDA graph capture on it), ``PinnedBuffer`` a device buffer with its
pinned host staging buffer, and ``CudaGraphs`` the bounded set of CUDA graphs of one engine:
one per input-shape combination, each captured on an execution context of its own, because
TensorRT ties a graph to the shapes and state of the context it was captured on.

cuda-python 12.x and 13.x are both supported (``cuda.bindings.runtime``, or the older
``cuda.cudart``); ``tests/runtime/test_trt_cuda.py`` calls every function here against both
without a GPU, where each returns an error code.
"""
from __future__ import annotations

import ctypes
import threading
import warnings
from collections import OrderedDict
from typing import Any, Callable, Hashable, TypeVar

import numpy as np

from mmedge.errors import BackendUnavailable, CudaError

__all__ = ["load_cudart", "cuda_check", "cuda_error", "gpu_problem", "probe_gpu", "CudaStream", "PinnedBuffer",
           "capture_graph", "CudaGraphs", "CudaGraphWarning", "EXTRAS_HINT"]

T = TypeVar("T")

EXTRAS_HINT = ("pick the extra that matches the NVIDIA driver: pip install 'mmedge[tensorrt-cu12]' (TensorRT 10, "
               "CUDA 12: driver R525 or newer, what onnxruntime-gpu's TensorRT EP links) or 'mmedge[tensorrt-cu13]' "
               "(TensorRT 11, CUDA 13: driver R580 or newer); on a Jetson, JetPack's TensorRT with "
               "cuda-python>=12,<13 (docs/tensorrt.md)")


def load_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6).

    Raises:
        BackendUnavailable: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise BackendUnavailable(f"cuda-python is not installed here ({exc}); {EXTRAS_HINT}") from exc
    return cudart


def _cuda_version(number: int) -> str:
    """``12090`` -> ``"12.9"`` (CUDA's version encoding)."""
    return f"{number // 1000}.{number % 1000 // 10}"


def _versions(cudart: Any) -> tuple[int, int]:
    """(driver, runtime) CUDA versions; the driver's is 0 when no NVIDIA driver is loaded."""
    driver_err, driver = cudart.cudaDriverGetVersion()
    runtime_err, runtime = cudart.cudaRuntimeGetVersion()
    ok = cudart.cudaError_t.cudaSuccess
    return (int(driver) if driver_err == ok else 0), (int(runtime) if runtime_err == ok else 0)


def _driver_too_old(cudart: Any, call: str) -> str:
    driver, runtime = _versions(cudart)
    found = ("no NVIDIA driver is loaded (cudaDriverGetVersion reports 0): install the NVIDIA driver, or run on "
             "ONNX Runtime's CPU backend (backend='ort')" if driver == 0 else
             f"the driver supports CUDA up to {_cuda_version(driver)}: upgrade the driver, or {EXTRAS_HINT}")
    return (f"{call}: the NVIDIA driver is missing or too old for cuda-python's CUDA {_cuda_version(runtime)} "
            f"runtime (cudaErrorInsufficientDriver); {found}")


_DEVICE_ERRORS: dict[str, Callable[[Any, str], str]] = {  # error name -> message; the backend is unusable here
    "cudaErrorInsufficientDriver": _driver_too_old,
    "cudaErrorNoDevice": lambda cudart, call: (
        f"{call}: no NVIDIA GPU is visible to CUDA (cudaErrorNoDevice); check nvidia-smi and CUDA_VISIBLE_DEVICES"),
    "cudaErrorStubLibrary": lambda cudart, call: (
        f"{call}: libcuda.so is the CUDA stub library, not a driver (cudaErrorStubLibrary); install the NVIDIA "
        "driver, or take the stubs folder off LD_LIBRARY_PATH"),
    "cudaErrorSystemDriverMismatch": lambda cudart, call: (
        f"{call}: the NVIDIA driver's user-space library and kernel module differ (cudaErrorSystemDriverMismatch); "
        "reboot after a driver upgrade, or reinstall the driver"),
    "cudaErrorDevicesUnavailable": lambda cudart, call: (
        f"{call}: every GPU is busy or in exclusive-process mode (cudaErrorDevicesUnavailable); free one, or "
        "check nvidia-smi's compute mode"),
}


def cuda_error(cudart: Any, err: Any, call: str) -> BackendUnavailable | CudaError:
    """The typed error for cuda-python error code ``err`` returned by ``call``.

    ``BackendUnavailable`` when CUDA cannot run here at all (driver too old or missing, no GPU),
    ``CudaError`` for a call that failed on a working GPU (out of memory, a bad capture...).
    """
    name = getattr(err, "name", str(err))
    if name in _DEVICE_ERRORS:
        return BackendUnavailable(_DEVICE_ERRORS[name](cudart, call))
    described = cudart.cudaGetErrorString(err)
    text = described[1].decode(errors="replace") if isinstance(described, tuple) and described[1] else name
    hint = ("free GPU memory or send smaller batches" if name == "cudaErrorMemoryAllocation" else
            "see the CUDA error above; run with backend='ort' to continue on ONNX Runtime")
    return CudaError(f"{call} failed: {name} ({text}); {hint}")


def cuda_check(cudart: Any, result: Any, call: str = "CUDA call") -> Any:
    """Unpacks a cuda-python result ``(err, *values)``, raising the typed error of an error code.

    Returns:
        None, the one value, or a tuple of the values after the error code.

    Raises:
        BackendUnavailable: CUDA cannot run here (``cuda_error``).
        CudaError: the call failed.
    """
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise cuda_error(cudart, err, call)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_problem(cudart: Any) -> str | None:
    """None if CUDA sees at least one GPU, else why not (driver too old, no GPU...)."""
    try:
        count = cuda_check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except (BackendUnavailable, CudaError) as exc:
        return str(exc)
    return None if count >= 1 else "cudaGetDeviceCount: no NVIDIA GPU is visible to CUDA (0 devices)"


def probe_gpu(cudart: Any) -> tuple[str, str]:
    """(name, ``"major.minor"`` compute capability) of the current CUDA device."""
    device = cuda_check(cudart, cudart.cudaGetDevice(), "cudaGetDevice")
    props = cuda_check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"


class CudaStream:
    """One non-blocking CUDA stream for the runners of one Session: created by the first runner
    that activates, destroyed when the last one deactivates. Its lock serializes the work queued
    on it (and keeps a CUDA graph capture from catching another runner's work).

    Non-blocking (``cudaStreamNonBlocking``): it does not synchronize with the legacy default
    stream, so ONNX Runtime's CUDA EP or torch working there cannot invalidate a capture on it.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._cudart: Any = None
        self._handle: Any = None
        self._users = 0

    def acquire(self, cudart: Any) -> Any:
        """The stream handle; creates the stream on first use."""
        with self.lock:
            if self._users == 0:
                created = cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking)
                self._cudart, self._handle = cudart, cuda_check(cudart, created, "cudaStreamCreateWithFlags")
            self._users += 1
            return self._handle

    def release(self) -> None:
        """Drops one user; the last one destroys the stream."""
        with self.lock:
            self._users -= 1
            if self._users == 0 and self._handle is not None:
                self._cudart.cudaStreamDestroy(self._handle)
                self._handle = None


class PinnedBuffer:
    """A device buffer and its pinned host staging buffer, ``capacity`` bytes each."""

    def __init__(self, cudart: Any, capacity: int) -> None:
        self.cudart, self.capacity = cudart, max(int(capacity), 1)
        self.device = int(cuda_check(cudart, cudart.cudaMalloc(self.capacity), "cudaMalloc"))
        try:
            self.host = int(cuda_check(cudart, cudart.cudaMallocHost(self.capacity), "cudaMallocHost"))
        except (BackendUnavailable, CudaError):
            cudart.cudaFree(self.device)
            raise

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A numpy view of the pinned buffer (valid until the next call)."""
        count = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_ubyte * max(count, 1)).from_address(self.host)
        return np.frombuffer(raw, np.uint8, count).view(dtype).reshape(shape)

    def free(self) -> None:
        """Frees both buffers."""
        self.cudart.cudaFree(self.device)
        self.cudart.cudaFreeHost(self.host)


def capture_graph(cudart: Any, stream: Any, enqueue: Callable[[], bool]) -> Any:
    """Captures what ``enqueue`` queues on ``stream`` into an instantiated CUDA graph.

    The capture is always ended, also when ``enqueue`` fails, so the stream is usable afterwards.

    Raises:
        BackendUnavailable / CudaError: a cudart call failed; CudaError: ``enqueue`` returned False.
    """
    mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    cuda_check(cudart, cudart.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
    try:
        ok = enqueue()
    finally:
        graph = cuda_check(cudart, cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
    try:
        if not ok:
            raise CudaError("TensorRT's execute_async_v3 failed while being captured into a CUDA graph")
        return cuda_check(cudart, cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
    finally:
        cudart.cudaGraphDestroy(graph)


class CudaGraphWarning(RuntimeWarning):
    """A CUDA graph could not be captured; the engine runs with plain enqueues from then on."""


class CudaGraphs:
    """The CUDA graphs of one engine: one per input-shape key, each on its own execution context,
    at most ``capacity`` of them (the least recently used one is dropped with its context).

    A capture that fails turns graphs off for this engine (``failed`` says why, once, as a
    ``CudaGraphWarning``): that call and every later one run as a plain enqueue on the runner's
    own context.

    Args:
        new_context: Makes a fresh execution context (``engine.create_execution_context``).
        capture: Context -> instantiated graph of one execution on it (raises on failure).
        launch: Replays an instantiated graph on the stream.
        destroy: Frees an instantiated graph.
        capacity: Most graphs (and their contexts) kept.
        name: The engine, for the warning.
    """

    def __init__(self, new_context: Callable[[], Any], capture: Callable[[Any], Any], launch: Callable[[Any], None],
                 destroy: Callable[[Any], None], *, capacity: int = 4, name: str = "engine") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._new_context, self._capture, self._launch, self._destroy = new_context, capture, launch, destroy
        self.capacity, self.name = capacity, name
        self._graphs: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()  # key -> (context, graph)
        self._pending: dict[Hashable, Any] = {}  # key -> context made but not captured yet
        self.failed: str | None = None

    def __len__(self) -> int:
        return len(self._graphs)

    def keys(self) -> list[Hashable]:
        """The captured keys, least recently used first."""
        return list(self._graphs)

    def context_for(self, key: Hashable) -> Any | None:
        """The execution context to set ``key``'s shapes and addresses on; None once graphs are off."""
        if self.failed is not None:
            return None
        if key in self._graphs:
            return self._graphs[key][0]
        if key not in self._pending:
            self._pending[key] = self._new_context()
        return self._pending[key]

    def execute(self, key: Hashable, default: Any, prepare: Callable[[Any], T], enqueue: Callable[[Any], None]) -> T:
        """One call: ``prepare`` (shapes, addresses) on ``key``'s own context, then replay or capture
        (``run``); once graphs are off, ``prepare`` and ``enqueue`` on ``default``.

        Returns:
            What ``prepare`` returned.
        """
        context = self.context_for(key)
        result = prepare(default if context is None else context)
        if context is None:
            enqueue(default)
        else:
            self.run(key, context, enqueue)
        return result

    def run(self, key: Hashable, context: Any, enqueue: Callable[[Any], None]) -> None:
        """Replays ``key``'s graph, or runs ``context`` once and captures it (``context_for(key)``)."""
        captured = self._graphs.get(key)
        if captured is not None and captured[0] is context:
            self._graphs.move_to_end(key)
            return self._launch(captured[1])
        enqueue(context)  # this call's result; also flushes TensorRT's deferred shape updates before capturing
        self._pending.pop(key, None)
        try:
            graph = self._capture(context)
        except Exception as exc:  # noqa: BLE001 - any failed capture: plain enqueues from now on
            return self._turn_off(f"{type(exc).__name__}: {exc}")
        self._forget(key)
        self._graphs[key] = (context, graph)
        while len(self._graphs) > self.capacity:
            self._forget(next(iter(self._graphs)))

    def _forget(self, key: Hashable) -> None:
        captured = self._graphs.pop(key, None)
        if captured is not None:
            self._destroy(captured[1])

    def _turn_off(self, why: str) -> None:
        self.clear()
        self.failed = why
        warnings.warn(f"mmedge: CUDA graph capture failed for {self.name} ({why}); it runs without CUDA graphs "
                      "from now on", CudaGraphWarning, stacklevel=4)

    def clear(self) -> None:
        """Drops every graph and context (the buffers they point at moved, or the runner closes)."""
        for key in list(self._graphs):
            self._forget(key)
        self._pending.clear()
