"""NNCF post-training quantization of an ONNX graph: the calibration run every int8 target shares.

The targets differ only in their activation scheme (NNCF's preset) and in the graph surgery
they apply afterwards (``ort_cpu``: u8 activations; ``tensorrt_qdq``: s8 symmetric).
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from mmedge.errors import CalibrationError, ExportError
from mmedge.export.quantization.graph_surgery import present_op_types
from mmedge.export.quantization.graph_traits import GraphTraits, graph_traits

__all__ = ["MODEL_TYPES", "DEFAULT_IGNORED", "DEPTHWISE_RANGES", "ActivationScheme", "ignored_for", "nncf_quantize", "describe"]


class ActivationScheme(str, Enum):
    """How NNCF quantizes activations (its preset: weights are s8 symmetric either way)."""

    SYMMETRIC = "symmetric"  # NNCF's PERFORMANCE preset
    ASYMMETRIC = "asymmetric"  # NNCF's MIXED preset (asymmetric activations; not the ``mixed`` precision)


MODEL_TYPES = ("cnn", "transformer", "head")
# CNNs with depthwise convolutions (EfficientNet, MobileNet) are quantization-sensitive: their activation
# ranges are the calibration set's global min / max (NNCF's MINMAX estimator, ONNX Runtime's MinMax) instead
# of NNCF's default mean of per-batch ranges, which clips the rare large activations, and NNCF's full
# bias correction replaces the fast one. Measured on the reference image encoder (EfficientNet-Lite0, 11
# depthwise convs; 300 training rows, 300 held-out rows): pooled min cosine to fp32 0.9498 (defaults) ->
# 0.9906 (MINMAX) -> 0.9957 (MINMAX + full bias correction; mean 0.9991), ONNX Runtime's quantize_static
# 0.9925, at the same latency (python benchmarks/image_int8_fidelity.py).
DEPTHWISE_RANGES = "minmax (global min / max over the calibration set), NNCF's full bias correction"
# Weights in a 7-bit range (NNCF's overflow fix on every Conv and MatMul): what OpenVINO's and ONNX
# Runtime's default u8 x s8 kernels need to be exact on x86 CPUs without VNNI (their products are
# added in pairs into int16: ``mmedge.runtime.int8_kernels``), at one bit of weight resolution. No
# shipped precision uses it since the runtime asks ONNX Runtime for exact kernels there instead: on
# the reference encoders (300 held-out rows, AVX2-only CPU) 7-bit weights gave min cosine to fp32
# 0.9930 (image) and 0.9868 (text) against 0.9957 and 0.9956 for 8-bit weights on the exact kernels
# (benchmarks/image_int8_fidelity.py; docs/quantization_notes.md). Kept for that comparison and for
# graphs meant for OpenVINO on such CPUs.
SATURATION_SAFE_WEIGHTS = "s8 in a 7-bit range (NNCF overflow fix): no int16 saturation in u8 x s8 kernels without VNNI"
# Op types kept in float by default, per model type (the type of an encoder is read from its graph:
# ``graph_traits``); a graph with float Gather tables (embeddings) also keeps Gather in float.
DEFAULT_IGNORED: dict[str, tuple[str, ...]] = {
    "cnn": (),
    "transformer": ("Gather",),  # MiniLM's 30522x384 word-embedding table
    # Heads: attention weights, the contrastive logit scale and L2 normalization stay float.
    "head": ("Gather", "Softmax", "Exp", "Mul", "Div", "ReduceSum", "ReduceL2"),
}


def nncf_quantize(src: str | Path, calib: Iterable[Mapping[str, np.ndarray]], *, model_type: str,
                  activations: ActivationScheme,
                  ignored_types: Sequence[str] | None = None, subset_size: int = 300,
                  saturation_safe: bool = False) -> tuple[Any, tuple[str, ...], int]:
    """Runs NNCF PTQ on the fp32 graph ``src``.

    Args:
        src: fp32 ONNX graph.
        calib: Calibration batches, ``dict[input_name, ndarray]``.
        model_type: "cnn", "transformer" (NNCF's transformer scheme) or "head".
        activations: Symmetric (NNCF's performance preset) or asymmetric (its mixed preset).
        ignored_types: Op types left in float; default ``ignored_for(model_type, graph_traits(src))``.
        subset_size: At most this many calibration batches are used.
        saturation_safe: Conv and MatMul weights in a 7-bit range (``SATURATION_SAFE_WEIGHTS``), for
            OpenVINO's integer kernels on x86 CPUs without VNNI (no shipped precision uses it).

    Returns:
        (the quantized ``onnx.ModelProto``, the ignored op types, the number of batches).
    """
    import nncf
    import onnx

    _quiet()
    if model_type not in MODEL_TYPES:
        raise ExportError(f"unknown model_type {model_type!r}; valid: {list(MODEL_TYPES)}")
    batches = [dict(b) for b in calib]
    if not batches:
        raise CalibrationError(f"no calibration batches for {Path(src).name}; pass at least one dict[input_name, ndarray]")
    model = onnx.load(str(src))
    traits = graph_traits(model)
    ignored = tuple(ignored_for(model_type, traits) if ignored_types is None else ignored_types)
    depthwise = model_type == "cnn" and traits.depthwise_convs > 0
    options = _options(activations, model_type, present_op_types(model, ignored), depthwise=depthwise,
                       saturation_safe=saturation_safe)
    run = lambda: nncf.quantize(_copy(model), nncf.Dataset(batches),  # noqa: E731
                                subset_size=min(subset_size, len(batches)), **options)
    quantized = run()
    if model_type == "cnn":
        quantized = _closer_bias_correction(model, quantized, batches, options, run)
    if depthwise:
        _note(quantized, "mmedge.activation_ranges", DEPTHWISE_RANGES)
    if saturation_safe:
        _note(quantized, "mmedge.weight_range", SATURATION_SAFE_WEIGHTS)
    return quantized, ignored, len(batches)


def _closer_bias_correction(model: Any, corrected: Any, batches: Sequence[Mapping[str, np.ndarray]],
                            options: dict[str, Any], run: Any) -> Any:
    """A CNN quantized with and without NNCF's fast bias correction: the one closer to fp32.

    Bias correction helps some CNNs and hurts others (of the reference encoders, the image
    encoder is closer to fp32 with it, the audio encoder without), so both are built and
    compared on the calibration batches; the choice and both scores are recorded in the graph's
    metadata (``mmedge.bias_correction``) and the manifest's ``quantization`` entry.
    """
    kind = "fast" if options.get("fast_bias_correction", True) else "full"
    options["advanced_parameters"].disable_bias_correction = True
    plain = run()
    scores = {kind: _min_cosine(model, corrected, batches), "off": _min_cosine(model, plain, batches)}
    chosen, graph = ("off", plain) if scores["off"] > scores[kind] else (kind, corrected)
    _note(graph, "mmedge.bias_correction", f"{chosen} (min cosine to fp32 on the calibration batches: with NNCF's "
                                           f"{kind} bias correction {scores[kind]:.4f}, without {scores['off']:.4f})")
    return graph


def _note(model: Any, key: str, value: str) -> None:
    """Records a quantization choice in the graph's metadata (``describe`` copies it to the manifest)."""
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


def _copy(model: Any) -> Any:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _min_cosine(reference: Any, candidate: Any, batches: Sequence[Mapping[str, np.ndarray]], limit: int = 64
                ) -> float:
    """Lowest per-row cosine of ``candidate``'s outputs to ``reference``'s (``parity.row_cosine``), the
    candidate run as written (Q/DQ in float: ``QDQ_AS_FLOAT``), not as this CPU's integer kernels run it."""
    from mmedge.export.parity import onnx_fn, row_cosine
    from mmedge.runtime.precisions import QDQ_AS_FLOAT

    ref = onnx_fn(reference.SerializeToString())
    cand = onnx_fn(candidate.SerializeToString(), disabled_optimizers=QDQ_AS_FLOAT)
    pairs = ((ref(feed), cand(feed)) for feed in batches[:limit])
    return min((row_cosine(r[name], c[name]) for r, c in pairs for name in r), default=1.0)


def ignored_for(model_type: str, traits: GraphTraits) -> tuple[str, ...]:
    """Op types kept in float: ``DEFAULT_IGNORED[model_type]``, plus Gather when the graph
    reads float embedding tables (NNCF would quantize the whole table; docs/quantization_notes.md)."""
    base = DEFAULT_IGNORED[model_type]
    return base if "Gather" in base or not traits.embedding_tables else (*base, "Gather")


def _quiet() -> None:
    """NNCF's INFO lines and ORT's unused-initializer warnings say nothing a user can act on."""
    import logging

    import nncf
    import onnxruntime

    nncf.set_log_level(logging.ERROR)
    onnxruntime.set_default_logger_severity(3)


def _options(activations: ActivationScheme, model_type: str, ignored: Sequence[str], *,
             depthwise: bool = False, saturation_safe: bool = False) -> dict[str, Any]:
    import nncf
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, OverflowFix,
                                                       QuantizationParameters)
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    # Per-tensor activations: ORT's integer conv has no per-channel activations, TensorRT neither.
    acts = QuantizationParameters(per_channel=False)
    symmetric = ActivationScheme(activations) is ActivationScheme.SYMMETRIC
    options: dict[str, Any] = {
        "preset": nncf.QuantizationPreset.PERFORMANCE if symmetric else nncf.QuantizationPreset.MIXED,
        "advanced_parameters": AdvancedQuantizationParameters(activations_quantization_params=acts),
    }
    if depthwise:  # DEPTHWISE_RANGES
        options["advanced_parameters"].activations_range_estimator_params = RangeEstimatorParametersSet.MINMAX
        options["fast_bias_correction"] = False
    if saturation_safe:  # SATURATION_SAFE_WEIGHTS
        options["advanced_parameters"].overflow_fix = OverflowFix.ENABLE
    if model_type == "transformer":
        options["model_type"] = nncf.ModelType.TRANSFORMER
    if ignored:
        options["ignored_scope"] = nncf.IgnoredScope(types=list(ignored), validate=False)
    return options


def describe(*, target: str, model_type: str, activations: str, ignored: Sequence[str], notes: str,
             summary: Mapping[str, Any], batches: int) -> dict[str, Any]:
    """The manifest's ``quantization`` entry of an NNCF-quantized graph."""
    import nncf

    return {
        "tool": f"nncf {nncf.__version__} (ONNX backend, post-training quantization)", "target": target,
        "model_type": model_type, "activations": activations, "weights": "s8 per-channel symmetric",
        "ignored": list(ignored), "calibration_batches": batches,
        "quantized_nodes": summary["quantized_ops"], "quantize_linear": summary["quantize_linear"],
        "dequantize_linear": summary["dequantize_linear"], "notes": notes,
        **{field: summary["metadata"][f"mmedge.{field}"] for field in ("bias_correction", "activation_ranges",
                                                                         "weight_range")
           if f"mmedge.{field}" in summary.get("metadata", {})},
    }
