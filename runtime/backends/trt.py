"""TensorRT: the loader of the engines ``mmedge build`` compiles on the device, and their runner.

``tensorrt`` and cuda-python are imported lazily (when a loader is called, and ``availability()``
asks CUDA for a GPU), so this module imports everywhere. ``EngineLoader`` finds an engine under
``<engine_dir>/<device key>/`` (``trt_engines``), refuses one whose build record does not fit
this device or this bundle graph (``EngineMismatch``, saying what differs and the command that
rebuilds it), deserializes it and creates its execution context. Its options are TensorRT's
alone (``TensorRTOptions``: engine folder, CUDA graphs, the rebuild command).

``TensorRTRunner`` only executes: the named-tensor API (``set_input_shape`` /
``set_tensor_address`` / ``execute_async_v3``) on one non-blocking CUDA stream shared by every
runner of a Session, pinned host staging buffers and device buffers reused across calls (grown on
demand), and, when the loader says so, one CUDA graph per input-shape combination, each captured
on an execution context of its own (``trt_cuda``). One TensorRT logger serves the process.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from mmedge.errors import BackendUnavailable, CudaError, InputError
from mmedge.runtime.backends.base import BaseLoader, BaseRunner, GraphRef, LoadSettings, TensorMeta
from mmedge.runtime.backends.table import Backend, register_backend
from mmedge.runtime.backends.trt_cuda import (CudaGraphs, CudaStream, PinnedBuffer, capture_graph, cuda_check,
                                              gpu_problem, load_cudart)
from mmedge.runtime.backends.trt_engines import (ENGINE_SUFFIX, INSTALL_HINT, check_engine, current_device,
                                                 default_engine_root, engine_file, load_tensorrt,
                                                 missing_engine_error, rebuild_hint, tensorrt_logger)

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
    """None if CUDA sees at least one GPU; else why not (a driver too old for cuda-python, no GPU...)."""
    try:
        cudart = load_cudart()
    except BackendUnavailable as exc:
        return f"cuda-python cannot be imported ({exc.__cause__})"
    return gpu_problem(cudart)


@dataclass(frozen=True)
class TensorRTOptions:
    """The TensorRT-only settings of a Session.

    Attributes:
        engine_dir: The engine root ``mmedge build`` wrote to (one folder per device key).
        cuda_graph: Capture one CUDA graph per input-shape combination and replay it, each on an
            execution context of its own.
        hint: The rebuild command, for error messages.
        max_cuda_graphs: Most graphs (and execution contexts) kept per engine; the least recently
            used shape's is dropped.
    """

    engine_dir: Path | None = None
    cuda_graph: bool = False
    hint: str = "rebuild it on this device with `mmedge build`"
    max_cuda_graphs: int = 4

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
    max_cuda_graphs: int = 4

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
        logger = tensorrt_logger(trt)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise BackendUnavailable(f"TensorRT {trt.__version__} cannot deserialize {self.path} (see the TensorRT "
                                     f"log above); {hint}")
        context = engine.create_execution_context()
        return LoadedEngine(trt, cudart, logger, runtime, engine, context, self.stream,
                            self.stream.acquire(cudart), self.options.cuda_graph, self.options.max_cuda_graphs)


class TensorRTRunner(BaseRunner):
    """Runs the engine its ``EngineLoader`` loads, e.g. ``TensorRTRunner(EngineLoader(engine_path(graph)))``.

    With CUDA graphs on, each input-shape combination gets its own execution context and graph
    (``CudaGraphs``, at most ``TensorRTOptions.max_cuda_graphs``): a graph replays only on the
    context and shapes it was captured with. A capture that fails leaves that call and later ones
    to plain enqueues on the runner's own context.
    """

    loader: EngineLoader

    def _activate(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        self._loaded = loaded = self.loader()
        self._trt, self._cudart = loaded.trt, loaded.cudart
        self._engine, self._context, self._stream = loaded.engine, loaded.context, loaded.stream_handle
        self._shared_stream, self._stream_ptr = loaded.stream, int(loaded.stream_handle)  # TensorRT takes an int
        self._buffers: dict[str, PinnedBuffer] = {}
        self._graphs = CudaGraphs(self._new_context, self._capture, self._replay,
                                  lambda graph_exec: self._cudart.cudaGraphExecDestroy(graph_exec),
                                  capacity=loaded.max_cuda_graphs, name=self.path.name) if loaded.cuda_graph else None
        metas = [self._tensor_meta(self._engine.get_tensor_name(i)) for i in range(self._engine.num_io_tensors)]
        return tuple(m for m, is_in in metas if is_in), tuple(m for m, is_in in metas if not is_in)

    def _tensor_meta(self, name: str) -> tuple[TensorMeta, bool]:
        trt, engine = self._trt, self._engine
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        shape = tuple(int(d) if int(d) >= 0 else None for d in engine.get_tensor_shape(name))
        return TensorMeta(name, dtype, shape), engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT

    @property
    def cuda_graph(self) -> bool:
        """Whether calls replay CUDA graphs (False when off, or after a capture failed)."""
        return self._graphs is not None and self._graphs.failed is None

    # -- inference ----------------------------------------------------------------------------

    def _buffer(self, name: str, nbytes: int) -> PinnedBuffer:
        buf = self._buffers.get(name)
        if buf is None or buf.capacity < nbytes:
            if buf is not None:
                buf.free()
            self._buffers[name] = buf = PinnedBuffer(self._cudart, nbytes)
            if self._graphs is not None:
                self._graphs.clear()  # captured graphs hold the old addresses
        return buf

    def _set_inputs(self, context: Any, feed: Mapping[str, np.ndarray]) -> None:
        cudart, h2d = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for meta in self._inputs:
            value = feed[meta.name]
            if not context.set_input_shape(meta.name, value.shape):
                low, _, high = self._engine.get_tensor_profile_shape(meta.name, 0)
                raise InputError(f"{self.path.name}: input {meta.name!r} has shape {list(value.shape)}, outside the "
                                 f"engine's optimization profile (min {list(low)}, max {list(high)}); rebuild with a "
                                 "larger `mmedge build --max-batch`, or send smaller batches")
            buf = self._buffer(meta.name, value.nbytes)
            np.copyto(buf.host_array(value.shape, meta.dtype), value)
            cuda_check(cudart, cudart.cudaMemcpyAsync(buf.device, buf.host, value.nbytes, h2d, self._stream),
                       "cudaMemcpyAsync")
        for meta in self._inputs:  # after every buffer is allocated: a growing one moves the others' graphs
            context.set_tensor_address(meta.name, self._buffers[meta.name].device)

    def _set_outputs(self, context: Any) -> dict[str, tuple[tuple[int, ...], PinnedBuffer]]:
        outputs = {}
        for meta in self._outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(meta.name))
            nbytes = int(np.prod(shape, dtype=np.int64)) * meta.dtype.itemsize
            outputs[meta.name] = shape, self._buffer(meta.name, nbytes)
        for name, (_, buf) in outputs.items():
            context.set_tensor_address(name, buf.device)
        return outputs

    def _enqueue(self, context: Any) -> None:
        if not context.execute_async_v3(self._stream_ptr):
            raise CudaError(f"TensorRT execution of {self.path.name} failed; see the TensorRT log above")

    def _new_context(self) -> Any:
        return self._engine.create_execution_context()

    def _capture(self, context: Any) -> Any:
        return capture_graph(self._cudart, self._stream, lambda: context.execute_async_v3(self._stream_ptr))

    def _replay(self, graph_exec: Any) -> None:
        cuda_check(self._cudart, self._cudart.cudaGraphLaunch(graph_exec, self._stream), "cudaGraphLaunch")

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, d2h = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        key = tuple(feed[m.name].shape for m in self._inputs)

        def prepare(context: Any) -> dict[str, tuple[tuple[int, ...], PinnedBuffer]]:
            self._set_inputs(context, feed)
            return self._set_outputs(context)

        with self._shared_stream.lock:
            if self._graphs is None:
                outputs = prepare(self._context)
                self._enqueue(self._context)
            else:
                outputs = self._graphs.execute(key, self._context, prepare, self._enqueue)
            dtypes = {m.name: m.dtype for m in self._outputs}
            for name, (shape, buf) in outputs.items():
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtypes[name].itemsize
                cuda_check(cudart, cudart.cudaMemcpyAsync(buf.host, buf.device, nbytes, d2h, self._stream),
                           "cudaMemcpyAsync")
            cuda_check(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            return {name: buf.host_array(shape, dtypes[name]).copy() for name, (shape, buf) in outputs.items()}

    # -- teardown -----------------------------------------------------------------------------

    def _deactivate(self) -> None:
        with self._shared_stream.lock:
            if self._graphs is not None:
                self._graphs.clear()
            for buf in self._buffers.values():
                buf.free()
            self._buffers = {}
            self._context = self._engine = None
            self._loaded.release()


register_backend(Backend("tensorrt", rank=10, loader=EngineLoader, runner=TensorRTRunner,
                         summary="TensorRT engines built on the device by `mmedge build`"))
