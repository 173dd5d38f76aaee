"""Adding a precision is one record plus one export policy: a weight-only int8 precision for CPUs
(weights stored s8 per output channel with a DequantizeLinear, activations float), registered
here, goes through export (graph, fidelity threshold from its record), accuracy, the ``mixed``
candidates, ``mmedge inspect`` and a ``Session`` run, then is unregistered."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

from tiny_modules import SmallCNN

from mmedge.cli import app
from mmedge.export.exporter import ExportConfig
from mmedge.export.quantization import POLICIES, PrecisionPolicy, export_precisions, register_policy
from mmedge.export.user_model import Member, export_model
from mmedge.runtime.precisions import PRECISIONS, Precision, get_precision, register_precision
from mmedge.runtime.specs import ImageSpec

NAME = "int8-weights"
LABELS = ["red", "green", "blue"]
SPEC = ImageSpec(size=24, mean=(0.5,) * 3, std=(0.25,) * 3)
_AXIS = {"Conv": lambda node: 0, "MatMul": lambda node: 1,
         "Gemm": lambda node: 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1}


class Int8Weights(PrecisionPolicy):
    """The policy: every float weight matrix read by a Conv / MatMul / Gemm stored s8 per output channel."""

    name, target = NAME, "onnxruntime-cpu"

    def build(self, src, dst, *, calib=(), model_type="cnn"):
        model = onnx.load(str(src))
        inits = {i.name: i for i in model.graph.initializer}
        done = []
        for node in list(model.graph.node):
            w = inits.get(node.input[1]) if node.op_type in _AXIS and len(node.input) > 1 else None
            if w is None or w.data_type != onnx.TensorProto.FLOAT or len(w.dims) < 2 or w.name in done:
                continue
            axis, array = _AXIS[node.op_type](node), numpy_helper.to_array(w)
            other = tuple(a for a in range(array.ndim) if a != axis)
            scale = (np.maximum(np.abs(array).max(axis=other), 1e-12) / 127.0).astype(np.float32)
            shape = [-1 if a == axis else 1 for a in range(array.ndim)]
            q = np.clip(np.rint(array / scale.reshape(shape)), -127, 127).astype(np.int8)
            model.graph.initializer.remove(w)
            model.graph.initializer.extend([numpy_helper.from_array(q, f"{w.name}_s8"),
                                            numpy_helper.from_array(scale, f"{w.name}_scale"),
                                            numpy_helper.from_array(np.zeros_like(scale, np.int8), f"{w.name}_zp")])
            model.graph.node.insert(0, helper.make_node("DequantizeLinear", [f"{w.name}_s8", f"{w.name}_scale",
                                                                             f"{w.name}_zp"], [w.name], axis=axis))
            done.append(w.name)
        onnx.checker.check_model(model)
        onnx.save(model, str(dst))
        return {"tool": "test: weight-only int8", "target": self.target, "weights": "s8 per output channel",
                "activations": "float", "weights_quantized": len(done)}


@pytest.fixture
def weight_only():
    """The record and its policy, registered for one test and removed after it."""
    record = register_precision(Precision(NAME, "int8 weights dequantized in the graph, float activations (CPU)",
                                          min_cosine=0.99, mixed_candidate=True))
    register_policy(Int8Weights)
    yield record
    POLICIES.unregister(NAME)
    PRECISIONS.unregister(NAME)


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(16, 3)

    def forward(self, image_pooled):
        return self.out(image_pooled) * 4.0


def _samples(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8)
        image[..., i % 3] += 150  # the class is the dominant channel
        out.append({"image": image, "label": LABELS[i % 3]})
    return out


def test_a_registered_precision_goes_through_export_mixed_inspect_and_run(weight_only, tmp_path):
    from mmedge.runtime import Session

    assert NAME in export_precisions() and get_precision(NAME) is weight_only
    torch.manual_seed(0)
    out = tmp_path / "bundle"
    manifest = export_model(encoders={"image": SmallCNN()}, heads={"h": Member(Linear(), inputs=("image_pooled",))},
                            specs={"image": SPEC}, labels=LABELS, calib=_samples(8, 0), eval_data=_samples(9, 1),
                            out=out, config=ExportConfig(precisions=("fp32", NAME, "mixed"), calib_samples=8,
                                                         max_drop=100.0))
    assert manifest["precisions"] == {"fp32": "ok", NAME: "ok", "mixed": "ok"}
    for graphs in (manifest["encoders"]["image"]["graphs"], manifest["members"][0]["graphs"]):
        entry = graphs[NAME]
        assert entry["quantization"]["tool"] == "test: weight-only int8" and entry["ort_disabled_optimizers"] == []
        assert entry["fidelity"]["min_cosine_required"] == 0.99 and entry["fidelity"]["min_cosine"] > 0.9
        graph = onnx.load(str(out / entry["file"]))
        assert {n.op_type for n in graph.graph.node} >= {"DequantizeLinear"}
        assert "QuantizeLinear" not in {n.op_type for n in graph.graph.node}  # activations stay float
        assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.graph.initializer)
        assert NAME in graphs["mixed"]["latency_ms_batch1"]  # a mixed candidate, timed with fp32
    metrics = manifest["metrics"][NAME]
    assert metrics["measured_on"] == weight_only.accuracy_label and 0.0 <= metrics["ensemble"] <= 1.0
    assert metrics["accuracy_reverts"] == []

    shown = CliRunner().invoke(app, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    assert NAME in shown.output and "float activations" in shown.output

    images = [s["image"] for s in _samples(6, 2)]
    with Session(out, precision="fp32") as session:
        reference = session.predict(image=images)
    with Session(out, precision=NAME) as session:
        got = session.predict(image=images)
    assert got.precision == NAME and len(got.labels) == len(images)
    assert np.allclose(got.probabilities, reference.probabilities, atol=0.05)


def test_a_policy_for_an_unregistered_precision_is_refused():
    from mmedge.errors import ConfigError

    class Nothing(Int8Weights):
        name = "no-such-precision"

    with pytest.raises(ConfigError, match="unknown precision 'no-such-precision'; registered precisions: fp32"):
        register_policy(Nothing)
    assert "no-such-precision" not in POLICIES
