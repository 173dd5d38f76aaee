"""``int8``: the ONNX Runtime CPU target (measurements behind it: ``docs/quantization_notes.md``).

NNCF with asymmetric activations (its MIXED preset), then every activation QuantizeLinear's
int8 zero point shifted +128 to uint8 (same scale, same grid: lossless) so ORT fuses
Conv/MatMul into integer kernels; s8 per-channel weights over the full 8 bits (exact on x86 CPUs
without VNNI too: the runtime asks ONNX Runtime for its u8 x u8 kernels there,
``mmedge.runtime.int8_kernels``); ``Gather`` left to NNCF in float and
large embedding tables (1M elements, or a quarter of the graph's weights: ``graph_traits``) stored
s8 per row instead (only the gathered rows are dequantized); a transformer's self-attentions fused into
ONNX Runtime's ``MultiHeadAttention`` with their Q/K/V projections packed into one integer MatMul
(``attention_fusion``: the ONNX Runtime CPU target only, TensorRT's graphs keep standard ops).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.export.quantization.attention_fusion import fuse_attention, pack_projections
from mmedge.export.quantization.base import PrecisionPolicy, register_policy
from mmedge.export.quantization.graph_surgery import compress_gather_tables, qdq_summary, shift_activations_to_uint8
from mmedge.export.quantization.graph_traits import graph_traits, table_threshold
from mmedge.export.quantization.nncf_ptq import ActivationScheme, describe, nncf_quantize


@register_policy
class Int8OrtCpu(PrecisionPolicy):
    """u8 activations / s8 weights, for ONNX Runtime's integer CPU kernels."""

    name = "int8"
    target = "onnxruntime-cpu"
    needs_calibration = True

    def build(self, src: Path, dst: Path, *, calib: Sequence[Mapping[str, np.ndarray]] = (),
              model_type: str = "cnn") -> dict[str, Any]:
        import onnx

        model, ignored, batches = nncf_quantize(src, calib, model_type=model_type,
                                                activations=ActivationScheme.ASYMMETRIC)
        shifted = shift_activations_to_uint8(model)
        tables = compress_gather_tables(model, min_elements=table_threshold(graph_traits(src)))
        fused = fuse_attention(model)
        packed = pack_projections(model)
        onnx.checker.check_model(model)
        onnx.save(model, str(dst))
        info = describe(target=self.target, model_type=model_type, ignored=ignored, batches=batches,
                        activations="u8 per-tensor (asymmetric; NNCF int8 zero points shifted +128)",
                        notes=f"{shifted} activation QuantizeLinear zero points shifted int8 -> uint8",
                        summary=qdq_summary(dst))
        if fused:
            info["attention"] = (f"{fused} self-attentions fused into com.microsoft.MultiHeadAttention (float), "
                                 f"Q/K/V projections packed into one MatMul in {packed}")
        if tables:
            info["embedding_tables"] = f"{', '.join(tables)}: s8 per-row, gathered before dequantization"
        return info
