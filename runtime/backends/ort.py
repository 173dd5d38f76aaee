"""ONNX Runtime: the one session factory for bundle graphs, its loaders (one per execution-provider
list) and its runner.

``create_session`` is how every bundle graph is opened with ONNX Runtime, by the runtime,
by export's parity and accuracy checks, by the bench and by the tests, so all of them run
the graph with the same options. Which optimizers stay off for a graph is a fact of the
graph, recorded by export in its manifest entry (``GraphEntry.ort_disabled_optimizers``).

Backends here: ``ort-trt`` (TensorRT EP -> CUDA EP -> CPU EP), ``ort-cuda`` (CUDA EP -> CPU EP),
``ort`` (CPU EP): three loaders that differ in their providers, one runner.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from mmedge.errors import BundleError
from mmedge.runtime.backends import ort_cache
from mmedge.runtime.backends.base import (BackendFallback, BaseLoader, BaseRunner, GraphRef, LoadSettings,
                                          TensorMeta)
from mmedge.runtime.backends.table import Backend, backend_order, register_backend
from mmedge.runtime.int8_kernels import int8_pairs_saturate

__all__ = ["create_session", "session_options", "EXACT_INT8_OPTION", "OrtLoader", "OrtCudaLoader", "OrtTensorRTLoader", "OrtRunner"]

EXACT_INT8_OPTION = "session.x64quantprecision"  # ONNX Runtime's u8 x u8 kernels where u8 x s8 ones overflow
EXACT_INT8_FIRST_PASS = "QDQS8ToU8Transformer"  # the option's rewrite of Q/DQ weights before fusion (see create_session)

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def session_options(threads: int | None = None) -> Any:
    """The runtime's ``onnxruntime.SessionOptions``: all graph optimizations, no spinning pool threads,
    no CPU memory arena, exact 8-bit integer products on every CPU (``EXACT_INT8_OPTION`` where needed).

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
    if int8_pairs_saturate():
        # Exact 8-bit products on x86 CPUs without VNNI (mmedge.runtime.int8_kernels): u8 x u8 kernels
        # instead of u8 x s8 ones that saturate int16 there. Reference image encoder, int8, AVX2-only
        # CPU: min cosine to fp32 0.9418 -> 0.9957 (exact: 0.9954). Only there: ONNX Runtime applies the
        # option on every x86 CPU with AVX2, and with VNNI its u8 x s8 kernels are exact and faster.
        options.add_session_config_entry(EXACT_INT8_OPTION, "1")
    # No CPU memory arena: the reference int8 bundle's process held 2-7 MiB less after its first
    # predictions over runs on a shared machine, at the same latency at batch 1 and 8
    # (benchmarks/startup.py, interleaved).
    options.enable_cpu_mem_arena = False
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    return options


def create_session(graph: str | Path | bytes, *, threads: int | None = None,
                   providers: Sequence[str | tuple[str, dict[str, Any]]] = ("CPUExecutionProvider",),
                   disabled_optimizers: Sequence[str] = (), profile_prefix: str | Path | None = None,
                   optimized: bool = False, save_optimized: str | Path | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for a bundle graph, with the runtime's options.

    Args:
        graph: An ONNX file, or a serialized model.
        threads: Intra-op threads (None: all cores).
        providers: Execution providers in priority order: names, or ``(name, options)`` tuples.
        disabled_optimizers: ONNX Runtime optimizers that break this graph and stay off: the
            graph's ``GraphEntry.ort_disabled_optimizers``, or, with only a precision name,
            ``mmedge.runtime.precisions.get_precision(name).ort_disabled_optimizers``.
        profile_prefix: Turn on ONNX Runtime's profiler, writing ``<prefix>_<time>.json``
            (``session.end_profiling()`` returns the path).
        optimized: ``graph`` is already optimized (written by ``save_optimized`` for these
            providers and this CPU): load it with graph optimization off.
        save_optimized: Also write the optimized graph to this file, its initializers of
            ``ort_cache.EXTERNAL_MIN_BYTES`` or more to ``ort_cache.WEIGHTS_FILE`` beside it (``ort_cache``).
    """
    import onnxruntime as ort

    options = session_options(threads)
    if optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if save_optimized is not None:
        options.optimized_model_filepath = str(save_optimized)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         ort_cache.WEIGHTS_FILE)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(ort_cache.EXTERNAL_MIN_BYTES))
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    source = graph if isinstance(graph, bytes) else str(graph)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=list(providers),
                                    disabled_optimizers=list(disabled_optimizers))
    except Exception:
        if not int8_pairs_saturate() or EXACT_INT8_FIRST_PASS in disabled_optimizers:
            raise
        # ONNX Runtime 1.32's first exact-int8 rewrite fails to initialize some graphs ("AddInitializedOrtValue
        # Attempt to replace the existing tensor": ONNX Runtime's quantize_static of a small audio CNN);
        # without it the later rewrite (Avx2WeightS8ToU8Transformer, on the fused integer nodes) still
        # makes the products exact (tests/runtime/test_int8_kernels.py).
        return ort.InferenceSession(source, sess_options=options, providers=list(providers),
                                    disabled_optimizers=[*disabled_optimizers, EXACT_INT8_FIRST_PASS])


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


@dataclass(frozen=True)
class OrtLoader(BaseLoader):
    """Makes an ONNX Runtime session for one bundle graph, on the CPU execution provider.

    Args:
        path: The ONNX file (for messages, and loaded when ``read`` is None).
        threads: Intra-op threads (None: all cores).
        disabled_optimizers: Optimizers that stay off for this graph (its ``GraphEntry.ort_disabled_optimizers``).
        provider_options: Execution provider name -> its options.
        read: Returns the graph's verified bytes, loaded instead of reading ``path`` again.
        cache: Where this graph's optimized form is cached (``ort_cache.cache_entry``; None: no cache).

    Attributes:
        providers: The execution providers, in priority order (the first is the one asked for).
        caches_optimized: Whether ``for_session`` gives graphs a cache entry (the CPU EP's loader:
            with a GPU provider the optimized graph would depend on what that provider claimed).
    """

    path: Path
    threads: int | None = None
    disabled_optimizers: tuple[str, ...] = ()
    provider_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    read: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)
    cache: Path | None = None

    providers: ClassVar[tuple[str, ...]] = ("CPUExecutionProvider",)
    caches_optimized: ClassVar[bool] = True
    install_hint: ClassVar[str] = "pip install onnxruntime"

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

    @classmethod
    def session_provider_options(cls, settings: LoadSettings) -> dict[str, dict[str, Any]]:
        """Execution provider options for the graphs of one Session (none for the CPU and CUDA EPs)."""
        return {}

    @classmethod
    def graph_provider_options(cls, settings: LoadSettings) -> Callable[[GraphRef], dict[str, dict[str, Any]]]:
        """Execution provider options per graph of one Session (by default the same for every graph)."""
        options = cls.session_provider_options(settings)
        return lambda graph: options

    @classmethod
    def for_session(cls, settings: LoadSettings) -> Callable[[GraphRef], "OrtLoader"]:
        """Threads from the Session, disabled optimizers from each graph's manifest entry, the cache entry."""
        options = cls.graph_provider_options(settings)

        def make(graph: GraphRef) -> OrtLoader:
            disabled = tuple(graph.entry.ort_disabled_optimizers)
            cache = ort_cache.cache_entry(settings, graph, disabled) if cls.caches_optimized else None
            return cls(graph.path, threads=settings.threads, provider_options=options(graph), read=graph.read,
                       disabled_optimizers=disabled, cache=cache)
        return make

    def __call__(self) -> Any:
        """The ``onnxruntime.InferenceSession``.

        Raises:
            BundleError: ONNX Runtime cannot load the graph.
        """
        providers = [(p, dict(self.provider_options[p])) if p in self.provider_options else p for p in self.providers]
        try:
            return self._from_cache(providers) or self._optimize(providers)
        except BundleError:
            raise
        except Exception as exc:  # onnxruntime's own Fail/InvalidGraph/...; undecodable names in a damaged graph
            raise BundleError(f"onnxruntime cannot load {self.path}: {str(exc)[:300]}; re-export the bundle") from exc


    def _from_cache(self, providers: list[Any]) -> Any:
        """The session from the cached optimized graph, or None (no entry, or one ONNX Runtime refuses)."""
        graph = self.cache / ort_cache.GRAPH_FILE if self.cache is not None else None
        if graph is None or not graph.is_file():
            return None
        try:
            return create_session(graph, threads=self.threads, providers=providers,
                                  disabled_optimizers=self.disabled_optimizers, optimized=True)
        except Exception:  # a damaged entry: optimize the bundle's graph again and rewrite it
            return None

    def _optimize(self, providers: list[Any]) -> Any:
        """The session from the bundle's verified graph; its optimized form is cached when there is a place."""
        folder = ort_cache.publish(self.cache) if self.cache is not None else None
        try:
            with _verified_source(self.path, self.read() if self.read is not None else None) as source:
                session = create_session(source, threads=self.threads, providers=providers,
                                         disabled_optimizers=self.disabled_optimizers,
                                         save_optimized=folder / ort_cache.GRAPH_FILE if folder else None)
        except BaseException:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        if folder is not None:
            ort_cache.commit(folder, self.cache)
        return session


@dataclass(frozen=True)
class OrtCudaLoader(OrtLoader):
    """ONNX Runtime on the CUDA execution provider (CPU fallback for unsupported nodes).

    The CUDA execution provider has no engine or timing cache to point anywhere: it picks
    cuDNN algorithms per process (``cudnn_conv_algo_search``), so there is nothing to persist.
    """

    providers: ClassVar[tuple[str, ...]] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    caches_optimized: ClassVar[bool] = False
    install_hint: ClassVar[str] = ("pip uninstall onnxruntime && pip install onnxruntime-gpu "
                                   "(with the CUDA and cuDNN versions it was built for)")


@dataclass(frozen=True)
class OrtTensorRTLoader(OrtLoader):
    """ONNX Runtime on its TensorRT execution provider, then CUDA, then CPU."""

    providers: ClassVar[tuple[str, ...]] = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                            "CPUExecutionProvider")
    caches_optimized: ClassVar[bool] = False
    install_hint: ClassVar[str] = ("install onnxruntime-gpu built with TensorRT support and put the TensorRT "
                                   "libraries on the library path (on Jetson: JetPack's onnxruntime-gpu wheel)")

    @classmethod
    def session_provider_options(cls, settings: LoadSettings) -> dict[str, dict[str, Any]]:
        """The TensorRT EP's engine and timing caches, in this device's folder of the engine root
        (created with its parents: the EP creates only the last folder, and fails without the rest)."""
        from mmedge.runtime.backends.ort_trt import cache_options

        return {"TensorrtExecutionProvider": cache_options(settings.engine_dir)}

    @classmethod
    def graph_provider_options(cls, settings: LoadSettings) -> Callable[[GraphRef], dict[str, dict[str, Any]]]:
        """The caches, plus each graph's explicit optimization profile (from the manifest, so the EP
        never rebuilds an engine when the batch or token count changes) and ``trt_fp16_enable``
        for a float16 graph (the EP has no strongly typed mode)."""
        from mmedge.runtime.backends.ort_trt import graph_options

        caches = cls.session_provider_options(settings)["TensorrtExecutionProvider"]
        per_graph = graph_options(settings)
        return lambda graph: {"TensorrtExecutionProvider": {**caches, **per_graph(graph)}}


_NOT_REGISTERED = {  # a requested execution provider that ONNX Runtime left out: the usual causes
    "TensorrtExecutionProvider": (" (ONNX Runtime could not load its TensorRT libraries, libnvinfer.so.10 for "
                                  "onnxruntime-gpu 1.x, or could not write its cache folder; run with ONNX "
                                  "Runtime's verbose log to see which)"),
}


class OrtRunner(BaseRunner):
    """Runs the ONNX Runtime session its loader makes (any ``OrtLoader``).

    ``infer`` is thread-safe (ONNX Runtime's ``run`` is).

    Args:
        loader: An ``OrtLoader`` (or ``OrtCudaLoader``, ``OrtTensorRTLoader``), e.g.
            ``OrtRunner(OrtLoader(path, threads=1))``.
    """

    loader: OrtLoader

    def _activate(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        self._session = self.loader()
        try:
            return (tuple(_meta(n) for n in self._session.get_inputs()),
                    tuple(_meta(n) for n in self._session.get_outputs()))
        except Exception as exc:  # undecodable names in a damaged graph (found by the fuzzer)
            self._session = None
            raise BundleError(f"onnxruntime cannot read the inputs and outputs of {self.path}: {str(exc)[:300]}; "
                              "re-export the bundle") from exc

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
    def backend_fallback(self) -> BackendFallback | None:
        """Set when ONNX Runtime does not run this graph on the first requested provider."""
        active, asked = self.active_providers, self.loader.providers[0]
        if not active or active[0] == asked:
            return None
        same = [b.name for b in backend_order()
                if issubclass(b.loader, OrtLoader) and b.loader.providers[0] == active[0]]
        why = _NOT_REGISTERED.get(asked, "")
        return BackendFallback(same[-1] if same else "ort",
                               f"{asked} did not register for {self.path.name}, which runs on {active}{why}")


register_backend(Backend("ort-trt", rank=20, loader=OrtTensorRTLoader, runner=OrtRunner,
                         summary="ONNX graphs, ONNX Runtime TensorRT EP -> CUDA EP -> CPU EP"))
register_backend(Backend("ort-cuda", rank=30, loader=OrtCudaLoader, runner=OrtRunner,
                         summary="ONNX graphs, ONNX Runtime CUDA EP -> CPU EP"))
register_backend(Backend("ort", rank=90, loader=OrtLoader, runner=OrtRunner,
                         summary="ONNX graphs, ONNX Runtime CPU EP", cpu=True))
