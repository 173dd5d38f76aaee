"""The precision-policy interface: one small class per reduced precision / target.

A policy turns a component's fp32 ONNX graph into the graph of its precision and says
how it did it (for the manifest). Policies are registered by precision name in
``POLICIES``; a new target is a new module with one ``@register_policy`` class, not a new
branch anywhere else.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from mmedge.registry import Registry

__all__ = ["PrecisionPolicy", "POLICIES", "register_policy", "CPU_ACCURACY"]

CPU_ACCURACY = "mmedge.runtime on ONNX Runtime (CPU)"


class PrecisionPolicy(abc.ABC):
    """Builds one precision of a component from its fp32 graph.

    Attributes:
        name: The precision name in the bundle (``"fp16"``, ``"int8"``, ``"int8-trt"``).
        target: The backend the graph is made for (``"onnxruntime-cpu"``, ``"tensorrt"``...).
        needs_calibration: Whether ``build`` uses calibration batches.
        accuracy_measured_on: How export's accuracy report runs this precision. For a graph
            made for another backend (TensorRT), it says that ONNX Runtime simulated it.
    """

    name: ClassVar[str] = ""
    target: ClassVar[str] = ""
    needs_calibration: ClassVar[bool] = False
    accuracy_measured_on: ClassVar[str] = CPU_ACCURACY

    @abc.abstractmethod
    def build(self, src: Path, dst: Path, *, calib: Sequence[Mapping[str, np.ndarray]] = (),
              model_type: str = "cnn") -> dict[str, Any]:
        """Writes the graph of this precision to ``dst`` from the fp32 graph ``src``.

        Args:
            src: The fp32 ONNX graph.
            dst: Where to write this precision's graph.
            calib: Calibration batches, ``dict[input_name, ndarray]`` (policies that quantize).
            model_type: ``"cnn"``, ``"transformer"`` or ``"head"`` (the NNCF scheme to use).

        Returns:
            A manifest-ready description of what was done.
        """


POLICIES: Registry[PrecisionPolicy] = Registry("precision")


def register_policy(cls: type[PrecisionPolicy]) -> type[PrecisionPolicy]:
    """Class decorator: registers one instance of ``cls`` under ``cls.name``."""
    POLICIES.register(cls.name)(cls())
    return cls
