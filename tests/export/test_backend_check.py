"""Export's check of graphs on OpenVINO (``mmedge.export.backend_check``), on small real ONNX graphs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmedge.export.backend_check import check_graph, checked_backends
from mmedge.export.parity import onnx_fn
from mmedge.runtime.backends import get_backend
from mmedge.runtime.backends.base import GraphRef
from mmedge.runtime.manifest import GraphEntry

pytest.importorskip("openvino", reason="export checks graphs on OpenVINO only where it is installed")


def _graph(path, seed: int = 0):
    """y = relu(x @ W): a (batch, 8) -> (batch, 4) graph."""
    w = np.random.default_rng(seed).standard_normal((8, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return GraphRef("encoder.image", path, GraphEntry(file=path.name, sha256="0" * 64))


def _cases():
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((b, 8)).astype(np.float32)} for b in (1, 3)]


def test_openvino_is_checked_where_it_is_installed():
    assert "openvino" in [b.name for b in checked_backends()]
    assert "ort" not in [b.name for b in checked_backends()]  # the graphs were verified on it already


def test_a_graph_openvino_runs_like_onnx_runtime_is_verified(tmp_path):
    ref = _graph(tmp_path / "g.onnx")
    result = check_graph(get_backend("openvino"), ref, "fp32", onnx_fn(ref.path), _cases(), threads=1)
    assert result["ok"] and result["min_cosine"] > 0.99999 and result["min_cosine_required"] == 0.99999
    assert result["cases"] == 2 and result["max_abs_diff"] < 1e-4


def test_a_graph_that_disagrees_with_the_reference_is_not_verified(tmp_path):
    ref = _graph(tmp_path / "g.onnx")
    other = onnx_fn(_graph(tmp_path / "other.onnx", seed=5).path)  # what the graph should have computed
    result = check_graph(get_backend("openvino"), ref, "int8", other, _cases(), threads=1)
    assert not result["ok"] and result["min_cosine"] < result["min_cosine_required"]


def test_a_graph_openvino_cannot_compile_records_the_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    ref = GraphRef("encoder.image", bad, GraphEntry(file="bad.onnx", sha256="0" * 64))
    result = check_graph(get_backend("openvino"), ref, "fp32", lambda case: {}, _cases())
    assert result["ok"] is False and "OpenVINO cannot compile" in result["error"]
