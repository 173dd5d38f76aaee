"""``fp16``: float16 weights and compute, float32 graph inputs and outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.errors import ExportError
from mmedge.export.quantization.base import PrecisionPolicy, register_policy
from mmedge.export.quantization.graph_surgery import toposort


@register_policy
class Fp16(PrecisionPolicy):
    """ONNX Runtime's float16 converter with ``keep_io_types=True`` (Casts at the boundary)."""

    name = "fp16"
    target = "any (onnxruntime, tensorrt)"

    def build(self, src: Path, dst: Path, *, calib: Sequence[Mapping[str, np.ndarray]] = (),
              model_type: str = "cnn") -> dict[str, Any]:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(src))
        try:
            half = convert_float_to_float16(model, keep_io_types=True)
        except Exception as err:  # noqa: BLE001 - surface any converter failure as an ExportError
            raise ExportError(f"fp16 conversion of {Path(src).name} failed: {err}") from err
        toposort(half.graph)  # the converter appends its input Casts after their consumers
        onnx.checker.check_model(half)
        onnx.save(half, str(dst))
        return {"tool": "onnxruntime.transformers.float16", "target": self.target, "weights": "fp16",
                "compute": "fp16", "io": "float32 (Cast at graph inputs/outputs)"}
