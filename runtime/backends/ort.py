"""ONNX Runtime: the one session factory for bundle graphs, and one runner per execution-provider list.

``create_session`` is how every bundle graph is opened with ONNX Runtime, by the runtime,
by export's parity and accuracy checks, by the bench and by the tests, so all of them run
the graph with the same options.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from mmedge.errors import BundleError
from mmedge.runtime.backends.base import BaseRunner, RunnerSetup, TensorMeta, register_runner

__all__ = ["create_session", "session_options", "disabled_optimizers", "OrtRunner", "OrtCudaRunner",
           "OrtTensorRTRunner"]

# ONNX Runtime graph optimizers that mis-handle a precision's graphs. WeightBiasQuantization
# turns a Conv's float bias into int32 with scale x_scale * w_scale; with the float16 scales of
# int8-fp16-trt that product underflows in fp16 and the outputs are garbage (measured: image
# encoder cosine 0.23 vs fp32 with it, 0.996 without). TensorRT does not do this rewrite.
_DISABLED_OPTIMIZERS: dict[str, tuple[str, ...]] = {"int8-fp16-trt": ("WeightBiasQuantization",)}

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def session_options(threads: int | None = None) -> Any:
    """The runtime's ``onnxruntime.SessionOptions``: all graph optimizations, no spinning pool threads.

    Args:
        threads: ``intra_op_num_threads`` (None: ONNX Runtime's default, all cores).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    options.inter_op_num_threads = 1
    # A session runs several graphs in turn: idle pool threads must sleep, not spin, or
    # each graph's threads steal the cores from the next one (measured: 2-5x slower).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    return options


def disabled_optimizers(precision: str | None) -> tuple[str, ...]:
    """ONNX Runtime optimizers that must stay off for the graphs of ``precision`` (usually none)."""
    return _DISABLED_OPTIMIZERS.get(precision or "", ())


def create_session(graph: str | Path | bytes, *, threads: int | None = None,
                   providers: Sequence[str | tuple[str, dict[str, Any]]] = ("CPUExecutionProvider",),
                   precision: str | None = None, profile_prefix: str | Path | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for a bundle graph, with the runtime's options.

    Args:
        graph: An ONNX file, or a serialized model.
        threads: Intra-op threads (None: all cores).
        providers: Execution providers in priority order: names, or ``(name, options)`` tuples.
        precision: The bundle precision of the graph; turns off the optimizers that break it
            (``disabled_optimizers``).
        profile_prefix: Turn on ONNX Runtime's profiler, writing ``<prefix>_<time>.json``
            (``session.end_profiling()`` returns the path).
    """
    import onnxruntime as ort

    options = session_options(threads)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    source = graph if isinstance(graph, bytes) else str(graph)
    return ort.InferenceSession(source, sess_options=options, providers=list(providers),
                                disabled_optimizers=list(disabled_optimizers(precision)))


@contextlib.contextmanager
def _verified_source(path: Path, graph_bytes: bytes | None) -> Iterator[str | Path | bytes]:
    """What ONNX Runtime loads: the verified bytes, through an in-memory file where Linux has one.

    ``InferenceSession(bytes)`` keeps about the graph's size more resident memory than loading a
    file (measured: +27 MiB for the reference int8 bundle); a ``memfd`` holding the same verified
    bytes loads like a file and is gone once the session exists.
    """
    if graph_bytes is None:
        yield path
        return
    if not hasattr(os, "memfd_create"):
        yield graph_bytes
        return
    fd = os.memfd_create(f"mmedge-{path.name}", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            out.write(graph_bytes)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _meta(node) -> TensorMeta:
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    return TensorMeta(node.name, np.dtype(_ORT_DTYPES.get(node.type, np.float32)), shape)


@register_runner
class OrtRunner(BaseRunner):
    """Runs an ONNX graph with ONNX Runtime on the CPU execution provider.

    Graph optimizations are ``ORT_ENABLE_ALL``; ``threads`` sets ``intra_op_num_threads``.
    ``infer`` is thread-safe (ONNX Runtime's ``run`` is).

    Attributes:
        providers: The execution providers, in priority order.
    """

    name: ClassVar[str] = "ort"
    providers: ClassVar[tuple[str, ...]] = ("CPUExecutionProvider",)
    install_hint: ClassVar[str] = "pip install onnxruntime"
    loads_graph_bytes: ClassVar[bool] = True  # takes the verified bytes of the bundle graph (graph_bytes=)

    def __init__(self, path: str | Path, *, threads: int | None = None, source_sha256: str | None = None,
                 precision: str | None = None, provider_options: Mapping[str, Mapping[str, Any]] | None = None,
                 graph_bytes: bytes | None = None) -> None:
        super().__init__(path, threads=threads, source_sha256=source_sha256)
        self._graph_bytes = graph_bytes  # loaded instead of reading ``path`` again; dropped once loaded
        self.precision = precision
        self.provider_options = {k: dict(v) for k, v in (provider_options or {}).items()}

    @classmethod
    def shared_kwargs(cls, setup: RunnerSetup) -> dict[str, Any]:
        """The precision (some optimizers must stay off for it)."""
        return {"precision": setup.precision}

    @classmethod
    def availability(cls) -> str | None:
        """None if the first (required) execution provider is in ``onnxruntime.get_available_providers()``."""
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        have = ort.get_available_providers()
        if cls.providers[0] not in have:
            return f"onnxruntime has no {cls.providers[0]} (available providers: {have})"
        return None

    def _activate(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        try:
            providers = [(p, self.provider_options[p]) if p in self.provider_options else p for p in self.providers]
            with _verified_source(self.path, self._graph_bytes) as source:
                self._session = create_session(source, threads=self.threads, providers=providers,
                                               precision=self.precision)
            metas = (tuple(_meta(n) for n in self._session.get_inputs()),
                     tuple(_meta(n) for n in self._session.get_outputs()))
        except Exception as exc:  # onnxruntime's own Fail/InvalidGraph/...; undecodable names in a damaged graph
            raise BundleError(f"onnxruntime cannot load {self.path}: {str(exc)[:300]}; re-export the bundle") from exc
        self._graph_bytes = None
        return metas

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(None, dict(feed))
        except Exception as exc:  # onnxruntime's own Fail/RuntimeException types: the graph failed on valid inputs
            raise BundleError(f"onnxruntime failed running {self.path.name}: {str(exc)[:300]}; the graph may be "
                              "damaged: re-export or re-copy the bundle") from exc
        return dict(zip(self.output_names, outputs))

    def _deactivate(self) -> None:
        self._session = None

    @property
    def active_providers(self) -> list[str]:
        """The providers ONNX Runtime actually uses for this graph (after ``activate()``)."""
        return list(self._session.get_providers()) if self.is_active else []

    @property
    def fallback(self) -> str | None:
        """Why ONNX Runtime does not run this graph on the first requested provider (None when it does)."""
        active = self.active_providers
        if not active or active[0] == self.providers[0]:
            return None
        return f"{self.path.name} runs on {active}, not {self.providers[0]}"


@register_runner
class OrtCudaRunner(OrtRunner):
    """ONNX Runtime on the CUDA execution provider (CPU fallback for unsupported nodes).

    The CUDA execution provider has no engine or timing cache to point anywhere: it picks
    cuDNN algorithms per process (``cudnn_conv_algo_search``), so there is nothing to persist.
    """

    name: ClassVar[str] = "ort-cuda"
    providers: ClassVar[tuple[str, ...]] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    install_hint: ClassVar[str] = ("pip uninstall onnxruntime && pip install onnxruntime-gpu "
                                   "(with the CUDA and cuDNN versions it was built for)")


@register_runner
class OrtTensorRTRunner(OrtRunner):
    """ONNX Runtime on its TensorRT execution provider, then CUDA, then CPU."""

    name: ClassVar[str] = "ort-trt"
    providers: ClassVar[tuple[str, ...]] = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                            "CPUExecutionProvider")
    install_hint: ClassVar[str] = ("install onnxruntime-gpu built with TensorRT support and put the TensorRT "
                                   "libraries on the library path (on Jetson: JetPack's onnxruntime-gpu wheel)")

    @classmethod
    def shared_kwargs(cls, setup: RunnerSetup) -> dict[str, Any]:
        """The TensorRT EP's engine and timing caches, in this device's folder of the engine root."""
        from mmedge.runtime.backends.trt_engines import ort_trt_cache_dir

        cache = str(ort_trt_cache_dir(setup.engine_dir))
        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                   "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}
        return {**super().shared_kwargs(setup), "provider_options": {"TensorrtExecutionProvider": options}}
