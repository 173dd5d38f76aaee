"""``int8-fp16-trt``: explicit s8 symmetric Q/DQ around float16 compute, for TensorRT.

In a strongly typed TensorRT network the layers outside Q/DQ run in the graph's float type:
``int8-trt`` keeps them in float32, which is slow on a Jetson. This variant converts the
``int8-trt`` graph (its record ``derives_from`` it: no second calibration) so that every float
outside the quantized ops is float16, Q/DQ scales included (as NVIDIA's ModelOpt writes FP16
Q/DQ graphs; opset >= 19 allows float16 scales). Graph inputs and outputs stay float32 (Casts at
the boundary), like ``fp16``.

Accuracy at export runs this graph on ONNX Runtime (CPU) with its ``WeightBiasQuantization``
optimizer off (the record's ``ort_disabled_optimizers``, written into each graph entry): that
rewrite multiplies the float16 scales into an int32 bias scale, which underflows in float16 and
wrecks the outputs. With it off, ONNX Runtime computes what the graph says; the figure is still
a simulation of the engine and is labelled so.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.errors import ExportError
from mmedge.export.quantization.base import PrecisionPolicy, register_policy
from mmedge.export.quantization.graph_surgery import assert_trt_qdq, drop_unused_initializers, qdq_summary, toposort

FP16_QDQ_MIN_OPSET = 19  # QuantizeLinear / DequantizeLinear take float16 scales from opset 19


def _scale_types(model: Any) -> Counter:
    """Element types of the Q/DQ scales (ONNX TensorProto codes: 1 float, 10 float16)."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    return Counter(inits.get(n.input[1], 0) for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear"))


def _subnormal_scales(model: Any) -> int:
    """Q/DQ scales below float16's smallest normal (6.1e-5): kept, with up to ~0.5% relative error."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    names = {n.input[1] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    tiny = np.finfo(np.float16).tiny
    return int(sum(np.sum(np.abs(numpy_helper.to_array(inits[s]).astype(np.float32)) < tiny)
                   for s in names if s in inits))


@register_policy
class Int8Fp16TensorRT(PrecisionPolicy):
    """The ``int8-trt`` graph (s8 symmetric Q/DQ, zero point 0) with float16 outside Q/DQ, for TensorRT on Jetson.

    ``src`` is the component's ``int8-trt`` graph; the description returned is what this step
    did (export adds the ``int8-trt`` graph's own, calibration included).
    """

    name = "int8-fp16-trt"
    target = "tensorrt"

    def build(self, src: Path, dst: Path, *, calib: Sequence[Mapping[str, np.ndarray]] = (),
              model_type: str = "cnn") -> dict[str, Any]:
        import onnx

        assert_trt_qdq(src)  # the source must already be TensorRT's Q/DQ (the int8-trt graph)
        half = self._to_fp16(onnx.load(str(src)), Path(src).name)
        onnx.save(half, str(dst))
        assert_trt_qdq(dst)
        types = _scale_types(half)
        if set(types) != {onnx.TensorProto.FLOAT16}:
            raise ExportError(f"{Path(src).name}: int8-fp16-trt left Q/DQ scales of types {dict(types)} (want all "
                              "float16); report this with the graph")
        subnormal = _subnormal_scales(half)
        summary = qdq_summary(dst)
        return {"target": self.target, "compute": "fp16 outside Q/DQ", "scales": "fp16",
                "io": "float32 (Cast at graph inputs/outputs)", "quantize_linear": summary["quantize_linear"],
                "dequantize_linear": summary["dequantize_linear"],
                "notes": f"float16 outside Q/DQ (onnxruntime.transformers.float16, keep_io_types); {subnormal} "
                         "scale values below float16's smallest normal"}

    @staticmethod
    def _to_fp16(model: Any, graph: str) -> Any:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        drop_unused_initializers(model.graph)
        opset = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if opset.version < FP16_QDQ_MIN_OPSET:
            raise ExportError(f"{graph} has opset {opset.version}; float16 Q/DQ scales need opset >= "
                              f"{FP16_QDQ_MIN_OPSET}; export with a torch whose dynamo exporter writes opset >= 19, or "
                              "leave int8-fp16-trt out of --precision")
        try:
            half = convert_float_to_float16(model, keep_io_types=True)
        except Exception as err:  # noqa: BLE001 - surface any converter failure as an ExportError
            raise ExportError(f"int8-fp16-trt conversion of {graph} failed: {err}") from err
        toposort(half.graph)
        onnx.checker.check_model(half)
        return half
