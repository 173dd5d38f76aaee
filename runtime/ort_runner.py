"""ONNX Runtime runners: one class per execution-provider list, all sharing ``OrtRunner``."""
from __future__ import annotations

from typing import ClassVar, Mapping

import numpy as np

from mmedge.errors import BundleError
from mmedge.runtime.runner_base import BaseRunner, TensorMeta

__all__ = ["OrtRunner", "OrtCudaRunner", "OrtTensorRTRunner"]

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def _meta(node) -> TensorMeta:
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    return TensorMeta(node.name, np.dtype(_ORT_DTYPES.get(node.type, np.float32)), shape)


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
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        options.inter_op_num_threads = 1
        # A session runs several graphs in turn: idle pool threads must sleep, not spin, or
        # each graph's threads steal the cores from the next one (measured: 2-5x slower).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads is not None:
            options.intra_op_num_threads = int(self.threads)
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options,
                                                 providers=list(self.providers))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise BundleError(f"onnxruntime cannot load {self.path}: {exc}; re-export the bundle") from exc
        return (tuple(_meta(n) for n in self._session.get_inputs()),
                tuple(_meta(n) for n in self._session.get_outputs()))

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._session.run(None, dict(feed))
        return dict(zip(self.output_names, outputs))

    def _deactivate(self) -> None:
        self._session = None

    @property
    def active_providers(self) -> list[str]:
        """The providers ONNX Runtime actually uses for this graph (after ``activate()``)."""
        return list(self._session.get_providers()) if self.is_active else []


class OrtCudaRunner(OrtRunner):
    """ONNX Runtime on the CUDA execution provider (CPU fallback for unsupported nodes)."""

    name: ClassVar[str] = "ort-cuda"
    providers: ClassVar[tuple[str, ...]] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    install_hint: ClassVar[str] = ("pip uninstall onnxruntime && pip install onnxruntime-gpu "
                                   "(with the CUDA and cuDNN versions it was built for)")


class OrtTensorRTRunner(OrtRunner):
    """ONNX Runtime on its TensorRT execution provider, then CUDA, then CPU."""

    name: ClassVar[str] = "ort-trt"
    providers: ClassVar[tuple[str, ...]] = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                            "CPUExecutionProvider")
    install_hint: ClassVar[str] = ("install onnxruntime-gpu built with TensorRT support and put the TensorRT "
                                   "libraries on the library path (on Jetson: JetPack's onnxruntime-gpu wheel)")
