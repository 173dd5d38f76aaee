"""Precisions as records: every fact about one bundle precision, in one ``Precision``.

A record says what the precision is (built from a graph, or selected among built graphs like
``mixed``), how faithful its graphs must be to fp32, what export falls back to when a graph
cannot be built, whether ``mixed`` may pick it on a CPU, whether and from which graph TensorRT
builds it, what its accuracy figure is measured on, and which ONNX Runtime optimizers must stay
off for its graphs. Export writes the load-time facts into each graph's manifest entry
(``ort_disabled_optimizers``), so the runtime reads the bundle rather than looking a name up.

Adding a precision is one record (``register_precision``) plus, for a built one, one export
policy attached to it (``mmedge.export.quantization.register_policy``). numpy-free and torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mmedge.errors import ConfigError
from mmedge.registry import Registry

__all__ = ["REFERENCE", "PrecisionKind", "MeasuredOn", "TensorRTBuild", "Precision", "PRECISIONS", "register_precision",
           "get_precision", "precision_names", "precisions", "tensorrt_precisions", "QDQ_AS_FLOAT"]

REFERENCE = "fp32"  # the precision exported from PyTorch: every other is measured against it and reverts to it


class PrecisionKind(str, Enum):
    """How a precision's graphs come to be."""

    BUILT = "built"  # one graph per component, made by export (fp32 from PyTorch, the rest by a policy)
    SELECTED = "selected"  # per component, one of the built graphs (``mixed``)


class MeasuredOn(str, Enum):
    """What export's accuracy figure of a precision runs on."""

    ORT_CPU = "onnxruntime-cpu"
    SIMULATED = "simulated on onnxruntime-cpu"  # a graph made for another backend, run by ONNX Runtime (CPU)
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class TensorRTBuild:
    """How ``mmedge build`` makes a TensorRT engine of a precision.

    Attributes:
        source: The bundle precision whose graph TensorRT builds from (strongly typed: the graph's
            own types decide the layer precisions).
        preference: Rank for ``--precision best``: the lowest the bundle has wins (expected fastest).
        float16: Its graph computes in float16: ONNX Runtime's TensorRT EP, which has no strongly
            typed mode, gets ``trt_fp16_enable`` for it.
    """

    source: str
    preference: int
    float16: bool = False


@dataclass(frozen=True)
class Precision:
    """One bundle precision.

    Attributes:
        name: The name in the manifest, ``Session(precision=...)`` and ``--precision``.
        summary: One line for help texts, ``mmedge inspect`` and the docs.
        kind: Built from a graph, or selected among the built graphs.
        min_cosine: Fidelity threshold: the min per-row cosine of its graphs against fp32 below
            which export warns.
        measured_on: What export's accuracy figure of it runs on.
        build_fallback: When a component's graph cannot be built, the precisions whose graph it
            uses instead, first that was built (then fp32).
        mixed_candidate: Whether ``mixed`` may pick its graph (ONNX Runtime CPU kernels run it).
        tensorrt: How TensorRT builds it (None: TensorRT does not).
        derives_from: The precision whose graph its policy converts (None: the fp32 graph).
        ort_disabled_optimizers: ONNX Runtime optimizers that mis-handle its graphs; export
            writes them into each graph entry.
        roofline_peak: The matrix-multiply peak that bounds its graphs on ONNX Runtime's CPU
            kernels (``"fp32"``, or ``"int8"`` for integer kernels): the bench's roofline.
    """

    name: str
    summary: str
    kind: PrecisionKind = PrecisionKind.BUILT
    min_cosine: float = 0.95
    measured_on: MeasuredOn = MeasuredOn.ORT_CPU
    build_fallback: tuple[str, ...] = ()
    mixed_candidate: bool = False
    tensorrt: TensorRTBuild | None = None
    derives_from: str | None = None
    ort_disabled_optimizers: tuple[str, ...] = ()
    roofline_peak: str = "fp32"

    @property
    def accuracy_label(self) -> str:
        """The manifest's ``metrics.<precision>.measured_on`` text (a simulation says so)."""
        if self.measured_on is MeasuredOn.SIMULATED:
            off = f", {' and '.join(self.ort_disabled_optimizers)} optimizer off" if self.ort_disabled_optimizers else ""
            return f"simulated on ONNX Runtime (CPU){off}: the {self.name} graph, not a TensorRT engine"
        if self.measured_on is MeasuredOn.TENSORRT:
            return "mmedge.runtime on TensorRT"
        return "mmedge.runtime on ONNX Runtime (CPU)"


PRECISIONS: Registry[Precision] = Registry("precision")


def register_precision(record: Precision) -> Precision:
    """Registers ``record`` under ``record.name`` (a duplicate is a ``RegistryError``).

    Raises:
        ConfigError: a record naming a precision that is not registered (``build_fallback``,
            ``derives_from``, ``tensorrt.source``).
    """
    named = [*record.build_fallback, *filter(None, [record.derives_from, record.tensorrt and record.tensorrt.source])]
    unknown = [n for n in named if n != record.name and n not in PRECISIONS]
    if unknown:
        raise ConfigError(f"precision {record.name!r} refers to {unknown}, which are not registered; register "
                          f"them first (registered: {', '.join(PRECISIONS)})")
    return PRECISIONS.register(record.name)(record)


def get_precision(name: str) -> Precision:
    """The record of precision ``name``.

    Raises:
        ConfigError: an unknown name (the message lists the registered ones).
    """
    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; registered precisions: {', '.join(PRECISIONS)} (a plug-in's "
                          "precision is registered when its module is imported)")
    return PRECISIONS[name]


def precision_names(*, kind: PrecisionKind | None = None) -> tuple[str, ...]:
    """Registered precisions, built ones first, each group in registration order (``kind``: only those)."""
    return tuple(p.name for p in precisions(kind=kind))


def precisions(*, kind: PrecisionKind | None = None) -> tuple[Precision, ...]:
    """Registered records, built ones first, each group in registration order (``kind``: only those)."""
    kinds = (kind,) if kind is not None else tuple(PrecisionKind)
    return tuple(p for k in kinds for p in PRECISIONS.values() if p.kind is k)


def tensorrt_precisions() -> tuple[str, ...]:
    """The precisions TensorRT builds (their record's ``tensorrt``), best first: ``mmedge build
    --precision best`` takes the first the bundle has (expected fastest)."""
    built = sorted((p for p in precisions() if p.tensorrt is not None), key=lambda p: p.tensorrt.preference)
    return tuple(p.name for p in built)


# The ONNX Runtime optimizer that fuses Q/DQ pairs into its integer CPU kernels. A TensorRT graph's
# simulation turns it off, so ONNX Runtime runs each DequantizeLinear -> float op -> QuantizeLinear
# as written: the graph's own arithmetic, which TensorRT computes exactly (int32 accumulation), not the
# export machine's integer kernels (ONNX Runtime's default ones, on x86 CPUs without VNNI, sum 8-bit
# products in pairs into a saturating int16: the image encoder's int8-trt graph measured min cosine
# 0.57 to fp32 that way, 0.994 as written; benchmarks/image_int8_fidelity.py, mmedge.runtime.int8_kernels).
QDQ_AS_FLOAT = ("QDQSelectorActionTransformer",)

# WeightBiasQuantization turns a Conv's float bias into int32 with scale x_scale * w_scale; with
# the float16 scales of int8-fp16-trt that product underflows in float16 and the outputs are
# garbage (measured: image encoder cosine 0.23 vs fp32 with it, 0.996 without). TensorRT does
# not do this rewrite.
for _record in (
    Precision("fp32", "float32, exported from PyTorch (parity enforced): the reference", min_cosine=0.99999,
              mixed_candidate=True, tensorrt=TensorRTBuild("fp32", 40)),
    Precision("fp16", "float16 weights and compute, float32 inputs and outputs", min_cosine=0.999,
              mixed_candidate=True, tensorrt=TensorRTBuild("fp16", 20, float16=True)),
    Precision("int8", "the ONNX Runtime CPU graph: NNCF int8 for its integer kernels (u8 activations with "
              "non-zero zero points, s8 per-channel weights)", mixed_candidate=True, roofline_peak="int8"),
    Precision("int8-dynamic", "ONNX Runtime's dynamic int8 (Optimum's CPU recipe): attention fused, s8 per-channel "
              "MatMul weights, inputs quantized per call; convolutions float", mixed_candidate=True,
              roofline_peak="int8"),
    Precision("int8-trt", "NNCF int8 as explicit s8 symmetric Q/DQ for TensorRT (float32 outside Q/DQ)",
              measured_on=MeasuredOn.SIMULATED, build_fallback=("fp16",), tensorrt=TensorRTBuild("int8-trt", 30),
              ort_disabled_optimizers=QDQ_AS_FLOAT, roofline_peak="int8"),
    Precision("int8-fp16-trt", "the int8-trt graph with float16 outside Q/DQ, for TensorRT on Jetson",
              measured_on=MeasuredOn.SIMULATED, build_fallback=("fp16",), derives_from="int8-trt",
              tensorrt=TensorRTBuild("int8-fp16-trt", 10, float16=True),
              ort_disabled_optimizers=("WeightBiasQuantization", *QDQ_AS_FLOAT),
              roofline_peak="int8"),
    Precision("mixed", "per component, the fastest CPU graph and backend within the accuracy budget (--max-drop)",
              kind=PrecisionKind.SELECTED),
):
    register_precision(_record)
