"""The export-policy interface: how export builds the graph of one registered precision.

A precision's facts are its record (``mmedge.runtime.precisions``); a policy attaches the
builder to it: it turns a component's source graph (fp32, or the graph of the precision the
record ``derives_from``) into the graph of its precision and says how it did it (for the
manifest). A new precision is one record plus one module with one ``@register_policy`` class.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from mmedge.errors import ConfigError
from mmedge.registry import Registry
from mmedge.runtime.precisions import REFERENCE, PrecisionKind, get_precision

__all__ = ["PrecisionPolicy", "NothingToQuantize", "POLICIES", "register_policy", "policy"]


class NothingToQuantize(Exception):
    """A policy's precision would change nothing in this graph (``int8-dynamic`` of a CNN, whose
    convolutions it keeps float): the component uses its fp32 graph for it, with this reason
    (``GraphEntry.kept_float``), rather than a second copy of the same graph."""


class PrecisionPolicy(abc.ABC):
    """Builds one precision of a component from its source graph.

    Attributes:
        name: The registered precision it builds (``"fp16"``, ``"int8"``, ``"int8-trt"``).
        target: The backend the graph is made for (``"onnxruntime-cpu"``, ``"tensorrt"``...),
            recorded in the manifest's ``quantization`` entry.
        needs_calibration: Whether ``build`` uses calibration batches.
    """

    name: ClassVar[str] = ""
    target: ClassVar[str] = ""
    needs_calibration: ClassVar[bool] = False

    @abc.abstractmethod
    def build(self, src: Path, dst: Path, *, calib: Sequence[Mapping[str, np.ndarray]] = (),
              model_type: str = "cnn") -> dict[str, Any]:
        """Writes the graph of this precision to ``dst`` from the graph ``src``.

        Args:
            src: The source graph: fp32, or that of the precision the record ``derives_from``.
            dst: Where to write this precision's graph.
            calib: Calibration batches, ``dict[input_name, ndarray]`` (policies that quantize).
            model_type: ``"cnn"``, ``"transformer"`` or ``"head"`` (the NNCF scheme to use).

        Returns:
            A manifest-ready description of what was done.

        Raises:
            NothingToQuantize: the precision changes nothing in this graph (nothing written).
        """


POLICIES: Registry[PrecisionPolicy] = Registry("precision policy")


def register_policy(cls: type[PrecisionPolicy]) -> type[PrecisionPolicy]:
    """Class decorator: registers one instance of ``cls`` as the builder of precision ``cls.name``.

    Raises:
        ConfigError: ``cls.name`` is not a registered precision (register its record first), or
            is one export does not build with a policy (fp32, a selected precision like ``mixed``).
    """
    record = get_precision(cls.name)
    if record.kind is not PrecisionKind.BUILT or record.name == REFERENCE:
        raise ConfigError(f"precision {cls.name!r} is {record.kind.value}" + (" from PyTorch" if record.name == REFERENCE
                          else " among the built graphs") + "; a policy builds a built precision from a graph")
    POLICIES.register(cls.name)(cls())
    return cls


def policy(precision: str) -> PrecisionPolicy:
    """The policy that builds ``precision`` (a ``RegistryError`` lists the valid ones)."""
    return POLICIES[precision]
