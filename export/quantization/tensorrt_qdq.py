"""``int8-trt``: explicit Q/DQ for TensorRT (strongly typed networks; no implicit calibrator).

NNCF with symmetric activations (its PERFORMANCE preset), then every unsigned activation
quantizer rewritten to signed int8 with zero point 0 (TensorRT accepts nothing else), verified
on every Q/DQ node. Export's
accuracy for it runs the Q/DQ graph on ONNX Runtime (CPU): a simulation of the engine,
labelled so in the manifest until a TensorRT engine measures it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.export.quantization.base import PrecisionPolicy, register_policy
from mmedge.export.quantization.graph_surgery import assert_trt_qdq, make_trt_symmetric, qdq_summary
from mmedge.export.quantization.nncf_ptq import ActivationScheme, describe, nncf_quantize


@register_policy
class Int8TensorRT(PrecisionPolicy):
    """s8 symmetric Q/DQ (zero point 0) around float compute, for TensorRT."""

    name = "int8-trt"
    target = "tensorrt"
    needs_calibration = True

    def build(self, src: Path, dst: Path, *, calib: Sequence[Mapping[str, np.ndarray]] = (),
              model_type: str = "cnn") -> dict[str, Any]:
        import onnx

        # (NNCF's HW config refuses signedness_to_force for post-ReLU tensors: its unsigned
        # quantizers are made signed afterwards.)
        model, ignored, batches = nncf_quantize(src, calib, model_type=model_type,
                                                activations=ActivationScheme.SYMMETRIC)
        rewritten = make_trt_symmetric(model)
        onnx.checker.check_model(model)
        onnx.save(model, str(dst))
        assert_trt_qdq(dst)
        return describe(target=self.target, model_type=model_type, ignored=ignored, batches=batches,
                        activations="s8 per-tensor symmetric, zero point 0",
                        notes=f"{rewritten} unsigned QuantizeLinear rewritten to signed int8",
                        summary=qdq_summary(dst))
