"""TensorRT: the loader of the engines ``mmedge build`` compiles on the device, and their runner.

``tensorrt`` and cuda-python are imported lazily (when a loader is called, and ``availability()``
asks CUDA for a GPU), so this module imports everywhere. ``EngineLoader`` finds an engine under
``<engine_dir>/<device key>/`` (``trt_engines``), refuses one whose build record does not fit
this device or this bundle graph (``EngineMismatch``, saying what differs and the command that
rebuilds it), deserializes it and creates its execution context. Its options are TensorRT's
alone (``TensorRTOptions``: engine folder, CUDA graphs, the rebuild command).

``TensorRTRunner`` only executes: the named-tensor API (``set_input_shape`` /
``set_tensor_address`` / ``execute_async_v3``) on one CUDA stream shared by every runner of a
Session, pinned host staging buffers and device buffers reused across calls (grown on demand),
and, when the loader says so, one CUDA graph captured per input-shape combination.
"""
from __future__ import annotations

import ctypes
import importlib.util
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from mmedge.errors import BackendUnavailable, InputError
from mmedge.runtime.backends.base import BaseLoader, BaseRunner, GraphRef, LoadSettings, TensorMeta
from mmedge.runtime.backends.table import Backend, register_backend
from mmedge.runtime.backends.trt_engines import (ENGINE_SUFFIX, INSTALL_HINT, check_engine, cuda_check,
                                                 current_device, default_engine_root, engine_file,
                                                 load_cudart, load_tensorrt, missing_engine_error, rebuild_hint)

if TYPE_CHECKING:  # pragma: no cover
    from mmedge.runtime.bundle import Bundle

__all__ = ["EngineLoader", "TensorRTOptions", "TensorRTRunner", "CudaStream", "engine_path"]


def engine_path(graph: Path, *, engine_dir: Path | None = None) -> Path:
    """The engine of bundle graph ``graph`` for this device (imports TensorRT to get the device key).

    ``<bundle>/encoders/image.fp16.onnx`` -> ``<engine_dir>/<device key>/encoders/image.fp16.engine``;
    ``engine_dir`` defaults to ``<bundle>/engines``.
    """
    graph = Path(graph)
    root = Path(engine_dir) if engine_dir is not None else default_engine_root(graph.parent.parent)
    return engine_file(root, current_device().key, f"{graph.parent.name}/{graph.name}")


def _spec_found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@lru_cache(maxsize=1)
def _gpu_problem() -> str | None:
    """None if CUDA sees at least one GPU (``cudaGetDeviceCount`` through cuda-python)."""
    try:
        cudart = load_cudart()
    except BackendUnavailable as exc:
        return f"cuda-python cannot be imported ({exc.__cause__})"
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        return f"no NVIDIA GPU is visible to CUDA (cudaGetDeviceCount: {err}, {count} devices)"
    return None


class CudaStream:
    """One CUDA stream for the runners of one Session: created by the first runner that
    activates, destroyed when the last one deactivates. Its lock serializes the work queued
    on it (and keeps a CUDA graph capture from catching another runner's work)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._cudart: Any = None
        self._handle: Any = None
        self._users = 0

    def acquire(self, cudart: Any) -> Any:
        """The stream handle; creates the stream on first use."""
        with self.lock:
            if self._users == 0:
                self._cudart, self._handle = cudart, cuda_check(cudart, cudart.cudaStreamCreate())
            self._users += 1
            return self._handle

    def release(self) -> None:
        """Drops one user; the last one destroys the stream."""
        with self.lock:
            self._users -= 1
            if self._users == 0 and self._handle is not None:
                self._cudart.cudaStreamDestroy(self._handle)
                self._handle = None


class _Buffer:
    """A device buffer and its pinned host staging buffer, ``capacity`` bytes each."""

    def __init__(self, cudart: Any, capacity: int) -> None:
        self.cudart, self.capacity = cudart, max(int(capacity), 1)
        self.device = int(cuda_check(cudart, cudart.cudaMalloc(self.capacity)))
        self.host = int(cuda_check(cudart, cudart.cudaMallocHost(self.capacity)))

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A numpy view of the pinned buffer (valid until the next call)."""
        count = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_ubyte * max(count, 1)).from_address(self.host)
        return np.frombuffer(raw, np.uint8, count).view(dtype).reshape(shape)

    def free(self) -> None:
        self.cudart.cudaFree(self.device)
        self.cudart.cudaFreeHost(self.host)


@dataclass(frozen=True)
class TensorRTOptions:
    """The TensorRT-only settings of a Session.

    Attributes:
        engine_dir: The engine root ``mmedge build`` wrote to (one folder per device key).
        cuda_graph: Capture one CUDA graph per input-shape combination and replay it.
        hint: The rebuild command, for error messages.
    """

    engine_dir: Path | None = None
    cuda_graph: bool = False
    hint: str = "rebuild it on this device with `mmedge build`"

    @classmethod
    def from_settings(cls, settings: LoadSettings) -> "TensorRTOptions":
        """The part of a Session's settings that concerns TensorRT."""
        return cls(settings.engine_dir, settings.cuda_graph,
                   rebuild_hint(settings.bundle_source, settings.precision, settings.engine_dir))


@dataclass
class LoadedEngine:
    """What ``EngineLoader`` makes: a deserialized engine, its execution context and the stream it runs on."""

    trt: Any
    cudart: Any
    logger: Any
    runtime: Any
    engine: Any
    context: Any
    stream: CudaStream
    stream_handle: Any
    cuda_graph: bool

    def release(self) -> None:
        """Drops the context, the engine and this engine's use of the stream."""
        self.context = self.engine = self.runtime = None
        self.stream.release()


@dataclass(frozen=True)
class EngineLoader(BaseLoader):
    """Loads one serialized TensorRT engine built by ``mmedge build``, after checking its build record.

    Args:
        path: The engine file (``engine_path(graph, engine_dir=...)``).
        source_sha256: The bundle graph's sha256, checked against the build record.
        options: TensorRT's settings (CUDA graphs, the rebuild command).
        stream: The Session's shared stream (each loader gets its own when not given).
    """

    path: Path
    source_sha256: str | None = None
    options: TensorRTOptions = TensorRTOptions()
    stream: CudaStream = field(default_factory=lambda: CudaStream(), compare=False, repr=False)

    install_hint: ClassVar[str] = INSTALL_HINT

    @classmethod
    def availability(cls) -> str | None:
        """None if tensorrt and cuda-python are installed and CUDA sees a GPU (TensorRT itself is not imported)."""
        if not _spec_found("tensorrt"):
            return "the tensorrt Python package is not installed"
        if not (_spec_found("cuda.bindings") or _spec_found("cuda.cudart")):
            return "cuda-python is not installed"
        return _gpu_problem()

    @classmethod
    def for_session(cls, settings: LoadSettings) -> Callable[[GraphRef], "EngineLoader"]:
        """One stream per Session; each graph's engine for this device under the engine root."""
        options, stream = TensorRTOptions.from_settings(settings), CudaStream()
        return lambda graph: cls(engine_path(graph.path, engine_dir=options.engine_dir),
                                 source_sha256=graph.entry.sha256, options=options, stream=stream)

    @classmethod
    def missing(cls, graphs: Sequence[GraphRef], settings: LoadSettings | None) -> str | None:
        """Says so unless every graph has an engine file for this device (imports TensorRT)."""
        if settings is not None and graphs and all(engine_path(g.path, engine_dir=settings.engine_dir).is_file()
                                                   for g in graphs):
            return None
        return "no TensorRT engines built for this bundle (run `mmedge build`)"

    @classmethod
    def build_missing(cls, bundle: "Bundle", graphs: Sequence[GraphRef], settings: LoadSettings) -> None:
        """Builds the engines that are missing, stale or built for another device or graph."""
        from mmedge.export.engine_build import ensure_engines  # TensorRT only; no torch, no onnx

        ensure_engines(bundle, settings.precision, engine_dir=settings.engine_dir,
                       components=[g.component for g in graphs])

    def __call__(self) -> LoadedEngine:
        """The deserialized engine and its execution context.

        Raises:
            BackendUnavailable: no engine for this graph, or TensorRT cannot deserialize it.
            EngineMismatch: an engine built for another device or graph (what differs, what to run).
        """
        trt, cudart = load_tensorrt()
        here, hint = current_device(), self.options.hint
        if not self.path.is_file():
            root, rel = self.path.parents[2], f"{self.path.parent.name}/{self.path.name[:-len(ENGINE_SUFFIX)]}.onnx"
            raise missing_engine_error(root, here, rel, hint=hint)
        check_engine(self.path, here, source_sha256=self.source_sha256, hint=hint)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise BackendUnavailable(f"TensorRT {trt.__version__} cannot deserialize {self.path} (see the TensorRT "
                                     f"log above); {hint}")
        context = engine.create_execution_context()
        return LoadedEngine(trt, cudart, logger, runtime, engine, context, self.stream,
                            self.stream.acquire(cudart), self.options.cuda_graph)


class TensorRTRunner(BaseRunner):
    """Runs the engine its ``EngineLoader`` loads, e.g. ``TensorRTRunner(EngineLoader(engine_path(graph)))``."""

    loader: EngineLoader

    def _activate(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        self._loaded = loaded = self.loader()
        self._trt, self._cudart, self.cuda_graph = loaded.trt, loaded.cudart, loaded.cuda_graph
        self._engine, self._context, self._stream = loaded.engine, loaded.context, loaded.stream_handle
        self._shared_stream = loaded.stream
        self._buffers: dict[str, _Buffer] = {}
        self._graphs: dict[tuple, Any] = {}
        metas = [self._tensor_meta(self._engine.get_tensor_name(i)) for i in range(self._engine.num_io_tensors)]
        return tuple(m for m, is_in in metas if is_in), tuple(m for m, is_in in metas if not is_in)

    def _tensor_meta(self, name: str) -> tuple[TensorMeta, bool]:
        trt, engine = self._trt, self._engine
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        shape = tuple(int(d) if int(d) >= 0 else None for d in engine.get_tensor_shape(name))
        return TensorMeta(name, dtype, shape), engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT

    # -- inference ----------------------------------------------------------------------------

    def _buffer(self, name: str, nbytes: int) -> _Buffer:
        buf = self._buffers.get(name)
        if buf is None or buf.capacity < nbytes:
            if buf is not None:
                buf.free()
            self._buffers[name] = buf = _Buffer(self._cudart, nbytes)
            self._drop_graphs()  # captured graphs hold the old addresses
        return buf

    def _set_inputs(self, feed: Mapping[str, np.ndarray]) -> None:
        cudart, h2d = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for meta in self._inputs:
            value = feed[meta.name]
            if not self._context.set_input_shape(meta.name, value.shape):
                low, _, high = self._engine.get_tensor_profile_shape(meta.name, 0)
                raise InputError(f"{self.path.name}: input {meta.name!r} has shape {list(value.shape)}, outside the "
                                 f"engine's optimization profile (min {list(low)}, max {list(high)}); rebuild with a "
                                 "larger `mmedge build --max-batch`, or send smaller batches")
            buf = self._buffer(meta.name, value.nbytes)
            np.copyto(buf.host_array(value.shape, meta.dtype), value)
            cuda_check(cudart, cudart.cudaMemcpyAsync(buf.device, buf.host, value.nbytes, h2d, self._stream))
            self._context.set_tensor_address(meta.name, buf.device)

    def _set_outputs(self) -> dict[str, tuple[tuple[int, ...], _Buffer]]:
        outputs = {}
        for meta in self._outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(meta.name))
            buf = self._buffer(meta.name, int(np.prod(shape, dtype=np.int64)) * meta.dtype.itemsize)
            self._context.set_tensor_address(meta.name, buf.device)
            outputs[meta.name] = shape, buf
        return outputs

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeError(f"TensorRT execution of {self.path.name} failed; see the TensorRT log above")

    def _launch(self, key: tuple) -> None:
        if not self.cuda_graph:
            return self._enqueue()
        graph_exec = self._graphs.get(key)
        if graph_exec is not None:
            return cuda_check(self._cudart, self._cudart.cudaGraphLaunch(graph_exec, self._stream))
        self._enqueue()  # runs this call; also flushes TensorRT's deferred shape updates before a capture
        self._graphs[key] = self._capture()

    def _capture(self) -> Any:
        cudart = self._cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_check(cudart, cudart.cudaStreamBeginCapture(self._stream, mode))
        ok = self._context.execute_async_v3(self._stream)
        graph = cuda_check(cudart, cudart.cudaStreamEndCapture(self._stream))
        if not ok:
            cudart.cudaGraphDestroy(graph)
            raise RuntimeError(f"TensorRT could not be captured into a CUDA graph for {self.path.name}; "
                               "run without cuda_graph")
        graph_exec = cuda_check(cudart, cudart.cudaGraphInstantiate(graph, 0))
        cudart.cudaGraphDestroy(graph)
        return graph_exec

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, d2h = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._shared_stream.lock:
            self._set_inputs(feed)
            outputs = self._set_outputs()
            self._launch(tuple(feed[m.name].shape for m in self._inputs))
            dtypes = {m.name: m.dtype for m in self._outputs}
            for name, (shape, buf) in outputs.items():
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtypes[name].itemsize
                cuda_check(cudart, cudart.cudaMemcpyAsync(buf.host, buf.device, nbytes, d2h, self._stream))
            cuda_check(cudart, cudart.cudaStreamSynchronize(self._stream))
            return {name: buf.host_array(shape, dtypes[name]).copy() for name, (shape, buf) in outputs.items()}

    # -- teardown -----------------------------------------------------------------------------

    def _drop_graphs(self) -> None:
        for graph_exec in self._graphs.values():
            self._cudart.cudaGraphExecDestroy(graph_exec)
        self._graphs = {}

    def _deactivate(self) -> None:
        with self._shared_stream.lock:
            self._drop_graphs()
            for buf in self._buffers.values():
                buf.free()
            self._buffers = {}
            self._context = self._engine = None
            self._loaded.release()


register_backend(Backend("tensorrt", rank=10, loader=EngineLoader, runner=TensorRTRunner,
                         summary="TensorRT engines built on the device by `mmedge build`"))
