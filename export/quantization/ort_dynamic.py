"""``int8-dynamic``: ONNX Runtime's dynamic int8 on the bundle's own fp32 graph, no calibration.

Optimum's CPU recipe for transformers, on mmedge's graph: self-attentions fused into ONNX
Runtime's ``MultiHeadAttention`` and their Q/K/V projections packed into one ``MatMul``
(``attention_fusion``, as for ``int8``), each with a padding mask then written as one
``com.microsoft.Attention`` over the packed projection (``attention_ops``), then
``onnxruntime.quantization.quantize_dynamic``: each ``Attention`` a ``QAttention`` (the projection's
integer GEMM and the attention in one kernel, Optimum's graph's), and the
weights of every ``MatMul`` with a constant weight s8 per output channel, its input quantized to
u8 per call from that call's own range (ONNX Runtime fuses it into ``DynamicQuantizeMatMul``:
no SmoothQuant ``Mul`` and no separate ``QuantizeLinear`` as in NNCF's static graph), and
large embedding tables s8 per row as in ``int8`` (``graph_surgery.compress_gather_tables``; more
faithful than ``quantize_dynamic``'s per-tensor ``Gather``). Convolutions stay float (ONNX
Runtime's dynamic ``ConvInteger`` is slower than its float convolution), so a graph with none of
these (a CNN) keeps its fp32 graph for this precision (``NothingToQuantize``).

It is a ``mixed`` candidate: on the reference text encoder it is the fastest CPU graph (its
products are exact on x86 CPUs without VNNI under the runtime's session options, like ``int8``'s:
``mmedge.runtime.int8_kernels``), at a lower fidelity than NNCF's static graph (measured in
``benchmarks/peers.json``; ``docs/quantization_notes.md``).
"""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from mmedge.export.quantization.attention_fusion import attention_ops, fuse_attention, pack_projections
from mmedge.export.quantization.base import NothingToQuantize, PrecisionPolicy, register_policy
from mmedge.export.quantization.graph_surgery import compress_gather_tables
from mmedge.export.quantization.graph_traits import graph_traits, table_threshold


@register_policy
class Int8Dynamic(PrecisionPolicy):
    """Fused attention, then ONNX Runtime's ``quantize_dynamic`` (s8 per-channel weights, u8 per-call inputs)."""

    name = "int8-dynamic"
    target = "onnxruntime-cpu"

    def build(self, src: Path, dst: Path, *, calib: Sequence[Mapping[str, np.ndarray]] = (),
              model_type: str = "cnn") -> dict[str, Any]:
        import onnx

        model = onnx.load(str(src))
        fused = fuse_attention(model)
        packed = pack_projections(model) if fused else 0
        merged = attention_ops(model) if packed else 0
        tables = compress_gather_tables(model, min_elements=table_threshold(graph_traits(src)))
        ops = _quantize(model, dst)
        if not (fused or ops["MatMulInteger"] or tables):
            dst.unlink()
            raise NothingToQuantize(f"{self.name} quantizes MatMul weights and embedding tables, and this graph has "
                                    "neither (its convolutions stay float)")
        return _describe(self.target, model_type, ops, (fused, packed, merged), tables)


def _quantize(model: Any, dst: Path) -> dict[str, int]:
    """``quantize_dynamic`` of ``model`` into ``dst`` (checked); returns the integer ops it made
    (``MatMulInteger``, ``QAttention``) and its per-call quantizers (``DynamicQuantizeLinear``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="mmedge-int8-dynamic-") as tmp, _quiet_preprocess_hint():
        fused = Path(tmp) / "fused.onnx"
        onnx.save(model, str(fused))
        quantize_dynamic(fused, dst, op_types_to_quantize=["MatMul", "Attention"], per_channel=True,
                         weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    out = onnx.load(str(dst))
    onnx.checker.check_model(out)
    return {op: sum(n.op_type == op for n in out.graph.node)
            for op in ("MatMulInteger", "QAttention", "DynamicQuantizeLinear")}


def _describe(target: str, model_type: str, ops: Mapping[str, int], attention: tuple[int, int, int],
              tables: Sequence[str]) -> dict[str, Any]:
    """The manifest's ``quantization`` entry (``attention``: fused, packed, turned into ``Attention``)."""
    import onnxruntime

    fused, packed, merged = attention
    info: dict[str, Any] = {
        "tool": f"onnxruntime {onnxruntime.__version__} quantize_dynamic", "target": target, "model_type": model_type,
        "activations": "u8 per call (dynamic: each call's own range)", "weights": "s8 per-channel symmetric",
        "quantized_nodes": {"MatMul": ops["MatMulInteger"], "Attention": ops["QAttention"]},
        "dynamic_quantize_linear": ops["DynamicQuantizeLinear"], "notes": "convolutions stay float; no calibration"}
    if fused:
        info["attention"] = (f"{fused} self-attentions fused into com.microsoft.MultiHeadAttention (float), "
                             f"Q/K/V projections packed into one MatMul in {packed}, {merged} of them with their "
                             "packed projection as one com.microsoft.Attention (QAttention once quantized)")
    if tables:
        info["embedding_tables"] = f"{', '.join(tables)}: s8 per-row, gathered before dequantization"
    return info


@contextmanager
def _quiet_preprocess_hint() -> Iterator[None]:
    """``quantize_dynamic`` logs a hint to run its shape pre-processing on the root logger at WARNING; the
    graph comes from the exporter with its shapes inferred, so the hint is noise in export's log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
