"""TensorRT 10 runner for engines built on the device by ``mmedge build``.

``tensorrt`` and ``cuda-python`` are imported lazily, inside ``activate()`` only, so this
module is importable everywhere. Each engine ``X.engine`` has a build record
``X.engine.json`` (``{"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", ...}``);
an engine built by another TensorRT version or for another GPU raises ``EngineMismatch``.
"""
from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from mmedge.errors import BackendUnavailable, EngineMismatch
from mmedge.runtime.backends.base import BaseRunner, TensorMeta, register_runner

__all__ = ["TensorRTRunner", "engine_path", "ENGINE_SUFFIX", "RECORD_SUFFIX"]

ENGINE_SUFFIX = ".engine"
RECORD_SUFFIX = ".engine.json"
_INSTALL = ("pip install 'mmedge[tensorrt]' (tensorrt>=10 and cuda-python) on a machine with an NVIDIA GPU; "
            "on Jetson, TensorRT comes with JetPack (apt install python3-libnvinfer) and cuda-python via pip")


def engine_path(graph: Path, *, engine_dir: Path | None = None) -> Path:
    """Where ``mmedge build`` puts the engine of bundle graph ``graph``.

    ``<bundle>/encoders/image.fp16.onnx`` -> ``<engine_dir>/encoders/image.fp16.engine``;
    ``engine_dir`` defaults to ``<bundle>/engines``.
    """
    graph = Path(graph)
    base = Path(engine_dir) if engine_dir is not None else graph.parent.parent / "engines"
    return base / graph.parent.name / (graph.stem + ENGINE_SUFFIX)


def _spec_found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _import_backend() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"backend 'tensorrt' needs the TensorRT Python package ({exc}); {_INSTALL}") from exc
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise BackendUnavailable(f"backend 'tensorrt' needs cuda-python ({exc}); {_INSTALL}") from exc
    return trt, cudart


def _cuda(cudart: Any, result: Any) -> Any:
    """Unpacks a cuda-python call result ``(err, *values)``, raising on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else tuple(values)


def _gpu_identity(cudart: Any) -> tuple[str, str]:
    device = _cuda(cudart, cudart.cudaGetDevice())
    props = _cuda(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"


def _check_record(engine: Path, source_sha256: str | None, trt_version: str, gpu: str, capability: str) -> None:
    record_file = engine.with_name(engine.name[: -len(ENGINE_SUFFIX)] + RECORD_SUFFIX)
    rebuild = "rebuild it here with `mmedge build` (engines are specific to a TensorRT version and GPU)"
    if not record_file.is_file():
        raise EngineMismatch(f"engine {engine} has no build record {record_file.name}; {rebuild}")
    record = json.loads(record_file.read_text(encoding="utf-8"))
    expected = {"tensorrt": trt_version, "gpu": gpu, "compute_capability": capability}
    diffs = [f"{k}: engine {record.get(k)!r}, here {v!r}" for k, v in expected.items() if record.get(k) != v]
    if source_sha256 and record.get("onnx_sha256") not in (None, source_sha256):
        diffs.append(f"built from graph sha256 {record['onnx_sha256']}, the bundle's is {source_sha256}")
    if diffs:
        raise EngineMismatch(f"engine {engine} was built elsewhere ({'; '.join(diffs)}); {rebuild}")


@register_runner
class TensorRTRunner(BaseRunner):
    """Runs a serialized TensorRT 10 engine (``execute_async_v3`` on its own CUDA stream).

    ``infer`` is serialized with a lock (an execution context is not thread-safe).
    Device buffers are allocated per tensor and grown on demand.
    """

    name: ClassVar[str] = "tensorrt"
    install_hint: ClassVar[str] = _INSTALL

    @classmethod
    def availability(cls) -> str | None:
        """None if ``tensorrt`` and cuda-python are importable (checked without importing them)."""
        if not _spec_found("tensorrt"):
            return "the tensorrt Python package is not installed"
        if not (_spec_found("cuda.bindings") or _spec_found("cuda.cudart")):
            return "cuda-python is not installed"
        return None

    @classmethod
    def artifact(cls, graph: Path, *, engine_dir: Path | None = None) -> Path:
        """The engine file built for ``graph`` (see ``engine_path``)."""
        return engine_path(graph, engine_dir=engine_dir)

    def _activate(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        trt, cudart = _import_backend()
        if not self.path.is_file():
            raise BackendUnavailable(f"no TensorRT engine at {self.path}; build the engines on this device "
                                     "with `mmedge build BUNDLE` or pass engine_dir=")
        _check_record(self.path, self.source_sha256, trt.__version__, *_gpu_identity(cudart))
        self._trt, self._cudart, self._lock, self._buffers = trt, cudart, threading.Lock(), {}
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EngineMismatch(f"TensorRT {trt.__version__} cannot deserialize {self.path}; rebuild it here "
                                 "with `mmedge build`")
        self._context = self._engine.create_execution_context()
        self._stream = _cuda(cudart, cudart.cudaStreamCreate())
        metas = [self._tensor_meta(self._engine.get_tensor_name(i)) for i in range(self._engine.num_io_tensors)]
        inputs = tuple(m for m, is_input in metas if is_input)
        return inputs, tuple(m for m, is_input in metas if not is_input)

    def _tensor_meta(self, name: str) -> tuple[TensorMeta, bool]:
        trt, engine = self._trt, self._engine
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        shape = tuple(int(d) if int(d) >= 0 else None for d in engine.get_tensor_shape(name))
        return TensorMeta(name, dtype, shape), engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, -1))
        if size < nbytes:
            if size >= 0:
                _cuda(self._cudart, self._cudart.cudaFree(ptr))
            ptr = int(_cuda(self._cudart, self._cudart.cudaMalloc(max(nbytes, 1))))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, kinds = self._cudart, self._cudart.cudaMemcpyKind
        with self._lock:
            hosts = {name: np.ascontiguousarray(feed[name]) for name in self.input_names}
            for name, host in hosts.items():
                self._context.set_input_shape(name, host.shape)
                ptr = self._device_buffer(name, host.nbytes)
                _cuda(cudart, cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes,
                                                     kinds.cudaMemcpyHostToDevice, self._stream))
                self._context.set_tensor_address(name, ptr)
            outputs = {}
            for meta in self._outputs:
                outputs[meta.name] = np.empty(tuple(self._context.get_tensor_shape(meta.name)), meta.dtype)
                self._context.set_tensor_address(meta.name, self._device_buffer(meta.name, outputs[meta.name].nbytes))
            if not self._context.execute_async_v3(self._stream):
                raise RuntimeError(f"TensorRT execution of {self.path.name} failed; see the TensorRT log above")
            for name, host in outputs.items():
                _cuda(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes,
                                                     kinds.cudaMemcpyDeviceToHost, self._stream))
            _cuda(cudart, cudart.cudaStreamSynchronize(self._stream))
            return outputs

    def _deactivate(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers = {}
        self._cudart.cudaStreamDestroy(self._stream)
        self._context = self._engine = self._runtime = None
