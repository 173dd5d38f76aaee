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

__all__ = ["MODEL_TYPES", "DEFAULT_IGNORED", "ActivationScheme", "ignored_for", "nncf_quantize", "describe"]


class ActivationScheme(str, Enum):
    """How NNCF quantizes activations (its preset: weights are s8 symmetric either way)."""

    SYMMETRIC = "symmetric"  # NNCF's PERFORMANCE preset
    ASYMMETRIC = "asymmetric"  # NNCF's MIXED preset (asymmetric activations; not the ``mixed`` precision)


MODEL_TYPES = ("cnn", "transformer", "head")
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
                  ignored_types: Sequence[str] | None = None, subset_size: int = 300) -> tuple[Any, tuple[str, ...], int]:
    """Runs NNCF PTQ on the fp32 graph ``src``.

    Args:
        src: fp32 ONNX graph.
        calib: Calibration batches, ``dict[input_name, ndarray]``.
        model_type: "cnn", "transformer" (NNCF's transformer scheme) or "head".
        activations: Symmetric (NNCF's performance preset) or asymmetric (its mixed preset).
        ignored_types: Op types left in float; default ``ignored_for(model_type, graph_traits(src))``.
        subset_size: At most this many calibration batches are used.

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
    ignored = tuple(ignored_for(model_type, graph_traits(model)) if ignored_types is None else ignored_types)
    options = _options(activations, model_type, present_op_types(model, ignored))
    run = lambda: nncf.quantize(_copy(model), nncf.Dataset(batches),  # noqa: E731
                                subset_size=min(subset_size, len(batches)), **options)
    quantized = run()
    if model_type == "cnn":
        quantized = _closer_bias_correction(model, quantized, batches, options, run)
    return quantized, ignored, len(batches)


def _closer_bias_correction(model: Any, corrected: Any, batches: Sequence[Mapping[str, np.ndarray]],
                            options: dict[str, Any], run: Any) -> Any:
    """A CNN quantized with and without NNCF's fast bias correction: the one closer to fp32.

    Bias correction helps some CNNs and hurts others (of the reference encoders, the image
    encoder is closer to fp32 with it, the audio encoder without), so both are built and
    compared on the calibration batches; the choice and both scores are recorded in the graph's
    metadata (``mmedge.bias_correction``) and the manifest's ``quantization`` entry.
    """
    options["advanced_parameters"].disable_bias_correction = True
    plain = run()
    scores = {"fast": _min_cosine(model, corrected, batches), "off": _min_cosine(model, plain, batches)}
    chosen, graph = ("off", plain) if scores["off"] > scores["fast"] else ("fast", corrected)
    entry = graph.metadata_props.add()
    entry.key, entry.value = "mmedge.bias_correction", (
        f"{chosen} (min cosine to fp32 on the calibration batches: with NNCF's fast bias correction "
        f"{scores['fast']:.4f}, without {scores['off']:.4f})")
    return graph


def _copy(model: Any) -> Any:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _min_cosine(reference: Any, candidate: Any, batches: Sequence[Mapping[str, np.ndarray]], limit: int = 64
                ) -> float:
    """Lowest per-row cosine of ``candidate``'s outputs to ``reference``'s (``parity.row_cosine``)."""
    from mmedge.export.parity import onnx_fn, row_cosine

    ref, cand = (onnx_fn(m.SerializeToString()) for m in (reference, candidate))
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


def _options(activations: ActivationScheme, model_type: str, ignored: Sequence[str]) -> dict[str, Any]:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    # Per-tensor activations: ORT's integer conv has no per-channel activations, TensorRT neither.
    acts = QuantizationParameters(per_channel=False)
    symmetric = ActivationScheme(activations) is ActivationScheme.SYMMETRIC
    options: dict[str, Any] = {
        "preset": nncf.QuantizationPreset.PERFORMANCE if symmetric else nncf.QuantizationPreset.MIXED,
        "advanced_parameters": AdvancedQuantizationParameters(activations_quantization_params=acts),
    }
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
        **({"bias_correction": summary["metadata"]["mmedge.bias_correction"]}
           if "mmedge.bias_correction" in summary.get("metadata", {}) else {}),
    }
