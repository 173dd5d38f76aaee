"""A component's graph entries: a precision converted from another precision's graph (its record's
``derives_from``) takes the build fallback when that graph could not be built."""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from mmedge.export.components import Component, make_reduced
from mmedge.runtime.manifest import GraphEntry


def _identity(path) -> None:
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in ("x", "y"))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="only")], "g", [x], [y])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph), str(path))


def test_derived_precision_falls_back_when_its_source_graph_was_not_built(tmp_path):
    _identity(tmp_path / "encoders/x.fp32.onnx")
    comp = Component("encoder.x", "encoders/x", module=None, kind="encoder", model_type="cnn")
    comp.graphs = {"fp32": GraphEntry(file="encoders/x.fp32.onnx"), "fp16": GraphEntry(file="encoders/x.fp16.onnx"),
                   "int8-trt": GraphEntry(file="encoders/x.fp16.onnx", build_fallback="fp16")}
    make_reduced(comp, "int8-fp16-trt", tmp_path, calib=[], cases=[])
    entry = comp.graphs["int8-fp16-trt"]
    assert entry.build_fallback == "fp16" and entry.file == "encoders/x.fp16.onnx"  # the record's fallback
    assert "converts the int8-trt graph of encoder.x, which could not be built" in entry.failed["error"]
    assert entry.failed["precision"] == "int8-fp16-trt" and entry.kept_float is None


def test_a_precision_that_changes_nothing_keeps_the_fp32_graph(tmp_path):
    """``int8-dynamic`` of a graph with no MatMul weight and no embedding table: the entry is the fp32
    graph with the reason (no second copy of the same graph, no failure recorded)."""
    _identity(tmp_path / "encoders/x.fp32.onnx")
    comp = Component("encoder.x", "encoders/x", module=None, kind="encoder", model_type="cnn")
    comp.graphs = {"fp32": GraphEntry(file="encoders/x.fp32.onnx")}
    make_reduced(comp, "int8-dynamic", tmp_path, calib=[], cases=[])
    entry = comp.graphs["int8-dynamic"]
    assert entry.file == "encoders/x.fp32.onnx" and not entry.built and entry.failed is None
    assert "has neither" in entry.kept_float
    assert not (tmp_path / "encoders/x.int8-dynamic.onnx").exists()
