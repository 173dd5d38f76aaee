"""OpenVINO: runs the bundle's own ONNX graphs (fp32, fp16, int8 Q/DQ) with Intel's runtime.

Backends here (one loader per device, one runner, as ``ort.py`` has one loader per execution
provider list):

| name            | rank | device | ``auto`` takes it                                        |
|-----------------|------|--------|----------------------------------------------------------|
| `openvino-gpu`  | 40   | GPU    | when openvino is installed and sees an Intel GPU          |
| `openvino-npu`  | 50   | NPU    | when openvino is installed and sees an Intel NPU          |
| `openvino`      | 95   | CPU    | never: `ort` (90) comes first and always runs; by name it runs where openvino is installed |

Why ONNX Runtime comes before OpenVINO on the CPU: with every graph pinned to f32 inference
precision (below), OpenVINO was measured no faster end to end on this x86 CPU and slower at batch 8:
`bash benchmarks/run_reference.sh` on an idle machine (2 cores, interleaved in one run), runtime / PyTorch
eager at batch 1 fp32 0.61 on OpenVINO vs 0.64 on ONNX Runtime, int8 0.46 vs 0.46; at batch 8 int8 0.76
vs 0.48 (its int8 audio encoder 1.6x slower); on a shared machine (`mmedge demo`) fp32 0.76 vs 0.61
(``docs/backends.md``). The faster OpenVINO figures measured before (image fp32 0.83 vs 1.64 ms, text fp32
2.15 vs 6.95 ms) were taken at OpenVINO's default inference precision, bf16 on this AMX CPU, which is
neither what an fp32 bundle promises nor safe in 2026.4 (below). The rule ``auto`` applies before taking
OpenVINO (an x86 CPU, every graph checked at export: ``missing``) stays for its GPU and NPU rows and for a
plug-in that ranks it earlier.

Each graph is compiled with ``PERFORMANCE_HINT=LATENCY``, the Session's threads (``INFERENCE_NUM_THREADS``),
and compiled blobs cached on disk (``CACHE_DIR``) so a second start skips compilation:
``<engine_dir>/openvino-cache`` when the Session's engine root is outside the bundle, else mmedge's user
cache (``<cache_root>/openvino``: ``$MMEDGE_CACHE_DIR``...), because a Session never writes into a bundle
folder (its file list and hashes are the contract). OpenVINO names each blob after the model and the
compile settings, so one cache serves every bundle.

Which graphs ``auto`` runs here: only those export verified on OpenVINO (``GraphEntry.backends``:
export runs every graph on OpenVINO when it is installed and compares it with the fp32 graph on
ONNX Runtime, at the precision's own ``min_cosine``; ``mmedge.export.backend_check``). OpenVINO
2026.4 was measured wrong on some graphs (a wav2vec2 int8 encoder at cosine 0.18 of ONNX
Runtime's; a small conv text encoder that fails to run at some shapes), so an unverified graph —
a bundle exported without openvino, or one OpenVINO disagreed on — stays on ONNX Runtime;
``backend="openvino"`` by name still runs it.
int8 on x86 CPUs without VNNI: OpenVINO's CPU kernels add u8 x s8 products in pairs into a saturating
int16 there (``mmedge.runtime.int8_kernels``) and, unlike ONNX Runtime, cannot be told not to; ``auto``
and ``mixed`` keep such graphs on ONNX Runtime (``missing``), by name OpenVINO runs them with a warning.
Precision: every graph runs at f32 inference precision (``INFERENCE_PRECISION_HINT=f32``): the
graph's own precision (fp16 weights, int8 Q/DQ) is what the bundle promises, and what export
checked. OpenVINO's CPU default on bf16/AMX CPUs is bf16, which export cannot check for CPUs that
lack it, and which OpenVINO 2026.4 was measured getting wrong here (on an AMX CPU, a small BERT
graph at bf16 failed at some shapes, once returned an empty batch, and left the process to
segfault in a later, unrelated f32 graph; pinned to f32, none of it happens). What
each graph really runs at is recorded (``OpenVINORunner.inference_precision``).

``openvino`` is imported only when one of these backends loads a graph or checks a GPU/NPU:
importing the runtime stays fast and light without it (``pip install 'mmedge[openvino]'``).
"""
from __future__ import annotations

import functools
import importlib.util
import platform
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from mmedge.errors import BundleError
from mmedge.runtime.backends.base import BackendFallback, BaseLoader, BaseRunner, GraphRef, LoadSettings, TensorMeta
from mmedge.runtime.backends.device_nodes import missing_device_node
from mmedge.runtime.backends.fallback import BackendFallbackWarning
from mmedge.runtime.backends.table import Backend, get_backend, register_backend
from mmedge.runtime.int8_kernels import X86_MACHINES, SaturatingInt8Warning, int8_pairs_saturate

__all__ = ["CompiledGraph", "OpenVINOLoader", "OpenVINOGpuLoader", "OpenVINONpuLoader", "OpenVINORunner", "X86_MACHINES",
           "CACHE_FOLDER", "VERIFIED_KEY", "verified_on_openvino", "cache_folder"]

CACHE_FOLDER = "openvino-cache"
VERIFIED_KEY = "openvino"  # GraphEntry.backends key export records its OpenVINO check under
INFERENCE_PRECISION = "f32"  # every graph (see the module docstring: bf16 is neither checked nor safe)


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    """One ``openvino.Core`` per process (it holds the device plugins)."""
    import openvino as ov

    return ov.Core()


def _installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


_SINK = "/sink_port_0"  # the ONNX front end names a graph output's Result node "<output name>/sink_port_0"


def _port_name(port: Any) -> str:
    """The ONNX name of a graph input or output. An output tensor can carry several names (the ONNX front
    end folds a one-input ``Sum`` or an ``Identity`` into its producer, whose name ``get_any_name`` may
    return); its Result node's friendly name says which one the ONNX graph gave it."""
    names, node = port.get_names(), port.get_node().get_friendly_name()
    own = node[:-len(_SINK)] if node.endswith(_SINK) else None
    return own if own in names else port.get_any_name()


def _meta(port: Any) -> TensorMeta:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorMeta(_port_name(port), np.dtype(port.get_element_type().to_dtype()), shape)


@dataclass(frozen=True)
class CompiledGraph:
    """What ``OpenVINOLoader`` makes: the compiled model, and the graph's inputs and outputs as the
    ONNX file names them (a compiled model may rename an output that a Cast produces; ports are
    used by position). ``per_row``: run a batch one row at a time (see ``OpenVINORunner``)."""

    compiled: Any
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    per_row: bool = False


def _quantized(model: Any) -> bool:
    """Whether an ``ov.Model`` holds quantization (FakeQuantize, from the ONNX graph's Q/DQ pairs)."""
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def _int8(graph: GraphRef) -> bool:
    """Whether export recorded Q/DQ or dynamic quantization in this graph (an int8 precision, or ``mixed``'s choice)."""
    return any((graph.entry.quantization or {}).get(k) for k in ("quantize_linear", "dynamic_quantize_linear"))


def verified_on_openvino(graph: GraphRef) -> bool:
    """Whether export ran this graph on OpenVINO and found it within its precision's ``min_cosine``."""
    return bool(((graph.entry.backends or {}).get(VERIFIED_KEY) or {}).get("ok"))


def cache_folder(settings: LoadSettings) -> Path:
    """Where a Session's compiled blobs go (``LoadSettings.cache_folder``: ``<engine_dir>/openvino-cache``,
    or ``cache_root()/openvino`` when the engine root is inside the bundle folder)."""
    return settings.cache_folder("openvino")


@dataclass(frozen=True)
class OpenVINOLoader(BaseLoader):
    """Compiles one bundle ONNX graph with OpenVINO on ``device``.

    Args:
        path: The ONNX file (for messages, and read when ``read`` is None).
        threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, all cores).
        inference_precision: ``INFERENCE_PRECISION_HINT`` (``"f32"``, ``"bf16"``, ``"f16"``; None:
            the device's default).
        cache_dir: ``CACHE_DIR`` for compiled blobs (None: no cache).
        read: Returns the graph's verified bytes, compiled instead of reading ``path`` again.
        rescue: Makes an activated ONNX Runtime runner of the same graph, for a graph OpenVINO fails to run
            at run time (set when ``auto`` chose OpenVINO; None: the failure is a ``BundleError``).
        pinned: ``ENABLE_CPU_PINNING`` (None: OpenVINO's default). False when encoders run at once
            (``LoadSettings.lanes``): pinned one-thread graphs all take the same core.

    Attributes:
        device: The OpenVINO device (``"CPU"``, ``"GPU"``, ``"NPU"``).
    """

    path: Path
    threads: int | None = None
    inference_precision: str | None = None
    cache_dir: Path | None = None
    read: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)
    rescue: Callable[[], BaseRunner] | None = field(default=None, repr=False, compare=False)
    pinned: bool | None = None

    device: ClassVar[str] = "CPU"
    verified_at_export: ClassVar[bool] = True
    install_hint: ClassVar[str] = "pip install 'mmedge[openvino]' (openvino==2026.4.1)"

    @classmethod
    def availability(cls) -> str | None:
        """None when openvino is installed (and, for a GPU or NPU, OpenVINO sees that device)."""
        if not _installed():
            return "openvino is not installed"
        if cls.device == "CPU":
            return None
        if absent := missing_device_node(cls.device):  # no device node: no need to import openvino (~35 MiB) to ask
            return absent
        devices = _core().available_devices
        return None if any(d.split(".")[0] == cls.device for d in devices) else \
            f"OpenVINO sees no {cls.device} (devices: {devices})"

    @classmethod
    def missing(cls, graphs: Sequence[GraphRef], settings: LoadSettings | None) -> str | None:
        """What ``auto`` asks before an OpenVINO row (the GPU/NPU rows, the CPU row where a plug-in ranks
        it before ``ort``, and ``mixed``'s placements): the CPU row on x86 only, not for int8 graphs where
        its kernels saturate (``int8_pairs_saturate``), and only graphs export verified on OpenVINO
        (``verified_on_openvino``); others stay on ONNX Runtime."""
        machine = platform.machine().lower()
        if cls.device == "CPU" and machine not in X86_MACHINES:
            return f"auto takes OpenVINO on x86 CPUs only (this is {machine}); ask for backend='openvino' by name"
        if cls.device == "CPU" and int8_pairs_saturate():
            saturating = [g.component for g in graphs if _int8(g)]
            if saturating:
                return (f"OpenVINO's int8 CPU kernels saturate on this x86 CPU without VNNI; ONNX Runtime's kernels "
                        f"run {', '.join(saturating)} exactly (mmedge.runtime.int8_kernels)")
        unverified = [g.component for g in graphs if not verified_on_openvino(g)]
        if unverified:
            return (f"auto takes OpenVINO only for graphs export verified on it, and {', '.join(unverified)} were not "
                    "(exported without openvino installed, or OpenVINO disagreed with ONNX Runtime: see `mmedge "
                    "inspect`); re-export with openvino installed, or ask for backend='openvino' by name")
        return None

    @classmethod
    def for_session(cls, settings: LoadSettings) -> Callable[[GraphRef], "OpenVINOLoader"]:
        """Threads from the Session (unpinned when encoders run at once), f32 inference, the compiled-blob cache."""
        cache = _cache_dir(cache_folder(settings))
        hint, pinned = INFERENCE_PRECISION, (False if settings.lanes > 1 else None)
        return lambda graph: cls(graph.path, threads=settings.threads, inference_precision=hint, cache_dir=cache,
                                 read=graph.read, rescue=_on_ort(graph, settings) if settings.auto else None,
                                 pinned=pinned)

    def config(self) -> dict[str, Any]:
        """The ``compile_model`` properties."""
        out: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads is not None and self.device == "CPU":
            out["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.pinned is not None and self.device == "CPU":
            out["ENABLE_CPU_PINNING"] = self.pinned
        if self.inference_precision is not None:
            out["INFERENCE_PRECISION_HINT"] = self.inference_precision
        if self.cache_dir is not None:
            out["CACHE_DIR"] = str(self.cache_dir)
        return out

    def __call__(self) -> CompiledGraph:
        """The compiled model and the graph's input / output metadata.

        Raises:
            BundleError: OpenVINO cannot read or compile the graph.
        """
        core = _core()
        try:
            model = core.read_model(self.read() if self.read is not None else str(self.path))
            metas = tuple(map(_meta, model.inputs)), tuple(map(_meta, model.outputs))
            return CompiledGraph(core.compile_model(model, self.device, self.config()), *metas, _quantized(model))
        except BundleError:
            raise
        except Exception as exc:  # openvino's own RuntimeError / GeneralFailure
            raise BundleError(f"OpenVINO cannot compile {self.path} for {self.device}: {' '.join(str(exc).split())[:300]}; "
                              "re-export the bundle, or use backend='ort'") from exc


def _on_ort(graph: GraphRef, settings: LoadSettings) -> Callable[[], BaseRunner]:
    """Makes an activated ONNX Runtime runner of ``graph`` (what ``auto`` would have run without OpenVINO)."""
    def make() -> BaseRunner:
        row = get_backend("ort")
        runner = row.runner(row.loader.for_session(settings)(graph))
        runner.activate()
        return runner

    return make


def _cache_dir(folder: Path) -> Path | None:
    """The compiled-blob cache folder, created; None where it cannot be (a read-only bundle)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder


@dataclass(frozen=True)
class OpenVINOGpuLoader(OpenVINOLoader):
    """OpenVINO on an Intel GPU."""
    device: ClassVar[str] = "GPU"
    verified_at_export: ClassVar[bool] = False  # export checks the CPU device; these rely on that check


@dataclass(frozen=True)
class OpenVINONpuLoader(OpenVINOLoader):
    """OpenVINO on an Intel NPU."""
    device: ClassVar[str] = "NPU"
    verified_at_export: ClassVar[bool] = False  # export checks the CPU device; these rely on that check


class OpenVINORunner(BaseRunner):
    """Runs the compiled model its loader makes; one infer request per calling thread (thread-safe).

    A quantized graph (int8 Q/DQ) runs a batch one row at a time (``per_row``): OpenVINO 2026.4's
    CPU plugin computes a batched int8 graph's ``ReduceMean`` over a re-quantized output wrong for
    every row but the first (measured on the reference image and audio encoders: row 0 exact, the
    others off by ~12 on a scale of 2.6); one row at a time it is exact.

    When OpenVINO fails to run the graph on valid inputs (2026.4's CPU plugin at bf16 fails some shapes
    of a small BERT graph it ran at others: "Failed to broadcast work_amount", or an output with an
    empty batch axis, which is checked) and ``auto`` chose it, the
    graph runs on ONNX Runtime from then on: a backend fallback, warned once (``BackendFallbackWarning``)
    and reported by ``backend_fallback``. Asked for by name, the failure is a ``BundleError``.

    Args:
        loader: An ``OpenVINOLoader`` (or its GPU / NPU subclass).
    """

    loader: OpenVINOLoader
    per_row: bool = False  # set by activate(): the graph is quantized
    _rescued: BaseRunner | None = None
    _fallback: BackendFallback | None = None

    def _activate(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        graph = self.loader()
        self._compiled, self._local, self.per_row = graph.compiled, threading.local(), graph.per_row
        self._lock = threading.Lock()
        if graph.per_row and self.loader.device == "CPU" and int8_pairs_saturate():
            self._saturating_cpu()
        return graph.inputs, graph.outputs

    def _saturating_cpu(self) -> None:
        """Warns that this int8 graph runs on an x86 CPU without VNNI, where OpenVINO's u8 x s8 kernels add the
        products in pairs into a saturating int16 (``mmedge.runtime.int8_kernels``; ``auto`` never places such
        a graph here: ``OpenVINOLoader.missing``)."""
        warnings.warn(f"mmedge: OpenVINO's int8 CPU kernels add u8 x s8 products in pairs into int16 on this x86 CPU "
                      f"without VNNI, which saturates ({self.path.name}; ONNX Runtime's kernels that add the same way "
                      "gave the reference image encoder min cosine 0.94 to fp32): backend='ort' computes it exactly",
                      SaturatingInt8Warning, stacklevel=2)

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._rescued is not None:
            return self._rescued.infer(feed)
        try:
            return self._infer_rows(feed)
        except BundleError as exc:
            if self.loader.rescue is None:
                raise
            return self._hand_to_ort(feed, exc)

    def _infer_rows(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(feed.values()))) if feed else 0
        if not self.per_row or batch <= 1:
            return self._checked(self._infer_once(feed), batch)
        rows = [self._infer_once({k: v[i:i + 1] for k, v in feed.items()}) for i in range(batch)]
        return self._checked({name: np.concatenate([r[name] for r in rows]) for name in self.output_names}, batch)

    def _checked(self, out: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        """Refuses outputs whose batch axis is not the input's: OpenVINO 2026.4 (bf16 on an AMX CPU) was
        seen returning a (0, 32) output for a batch of 9 from a small BERT graph, without an error."""
        wrong = [f"{m.name}{list(out[m.name].shape)}" for m in self._outputs
                 if m.shape and m.shape[0] is None and (out[m.name].ndim == 0 or len(out[m.name]) != batch)]
        if batch and wrong:
            raise BundleError(f"OpenVINO ran {self.path.name} on a batch of {batch} but returned {', '.join(wrong)}; "
                              "the graph may not run on OpenVINO: use backend='ort'")
        return out

    def _hand_to_ort(self, feed: Mapping[str, np.ndarray], exc: BundleError) -> dict[str, np.ndarray]:
        with self._lock:
            if self._rescued is None:
                shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
                detail = (f"OpenVINO failed running {self.path.name} on {shapes} ({' '.join(str(exc).split())[:160]}); "
                          "it runs on ONNX Runtime from now on")
                self._rescued, self._fallback = self.loader.rescue(), BackendFallback("ort", detail)
                warnings.warn(f"mmedge: {detail}", BackendFallbackWarning, stacklevel=5)
        return self._rescued.infer(feed)

    @property
    def backend_fallback(self) -> BackendFallback | None:
        """Set once a graph OpenVINO failed to run has been handed to ONNX Runtime (``auto`` only)."""
        return self._fallback

    def _infer_once(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        try:
            # Synchronous: OpenVINO may read the caller's arrays in place and hand back its own output
            # buffers (no copy either way)...
            results = request.infer({i: feed[name] for i, name in enumerate(self.input_names)},
                                    share_inputs=True, share_outputs=True)
        except Exception as exc:  # openvino's RuntimeError: the graph failed on valid inputs
            raise BundleError(f"OpenVINO failed running {self.path.name}: {str(exc)[:300]}; the graph may be "
                              "damaged: re-export or re-copy the bundle") from exc
        # ...which the request reuses on its next call: one copy here.
        return {name: np.array(results[i]) for i, name in enumerate(self.output_names)}

    def _deactivate(self) -> None:
        self._compiled = None
        self._local = threading.local()
        if self._rescued is not None:
            self._rescued.deactivate()
            self._rescued = None

    @property
    def inference_precision(self) -> str | None:
        """The precision OpenVINO really runs this graph at (``"f32"``, ``"bf16"``...; after ``activate()``)."""
        if not self.is_active:
            return None
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        return hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)


register_backend(Backend("openvino-gpu", rank=40, loader=OpenVINOGpuLoader, runner=OpenVINORunner,
                         summary="ONNX graphs, OpenVINO on an Intel GPU"))
register_backend(Backend("openvino-npu", rank=50, loader=OpenVINONpuLoader, runner=OpenVINORunner,
                         summary="ONNX graphs, OpenVINO on an Intel NPU"))
register_backend(Backend("openvino", rank=95, loader=OpenVINOLoader, runner=OpenVINORunner,
                         summary="ONNX graphs, OpenVINO on the CPU (by name: auto takes ONNX Runtime first)", cpu=True))
