"""FLOP counting of ONNX graphs (``mmedge.export.flops``) against hand-computed counts."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mmedge.export.flops import count_flops, matmul_peak  # noqa: E402


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _w(name, shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def test_conv_with_groups_and_relu():
    # x (2, 4, 8, 8), w (6, 2, 3, 3), group 2, pad 1 -> y (2, 6, 8, 8); then Relu on y.
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], group=2, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["y"], ["z"])]
    model = _model(nodes, [_vi("x", ["batch", 4, 8, 8])], [_vi("z", ["batch", 6, 8, 8])], [_w("w", (6, 2, 3, 3))])
    counted = count_flops(model, {"x": (2, 4, 8, 8)})
    macs = 2 * 6 * 8 * 8 * (4 // 2) * 3 * 3  # N * C_out * H * W * (C_in / groups) * kh * kw
    relu = 2 * 6 * 8 * 8
    assert counted.macs == macs and counted.other == relu
    assert counted.flops == 2 * macs + relu
    assert counted.by_op == {"Conv": 2 * macs, "Relu": relu}
    assert dict(counted.output_shapes) == {"z": (2, 6, 8, 8)} and counted.unknown == ()


def test_depthwise_conv_with_stride():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], group=16, strides=[2, 2], pads=[1, 1, 1, 1])]
    model = _model(nodes, [_vi("x", [1, 16, 10, 10])], [_vi("y", None)], [_w("w", (16, 1, 3, 3))])
    assert count_flops(model, {"x": (1, 16, 10, 10)}).macs == 16 * 5 * 5 * 1 * 9


def test_batched_matmul_gemm_and_softmax():
    # a (B, 3, 5, 7) @ b (7, 4) -> (B, 3, 5, 4); Gemm: c (6, 10) @ w^T (10, 12) -> (6, 12).
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"]), helper.make_node("Softmax", ["y"], ["s"]),
             helper.make_node("Gemm", ["c", "w", "bias"], ["g"], transB=1)]
    model = _model(nodes, [_vi("a", ["batch", 3, 5, 7]), _vi("c", [6, 10])],
                   [_vi("s", ["batch", 3, 5, 4]), _vi("g", [6, 12])], [_w("b", (7, 4)), _w("w", (12, 10)), _w("bias", (12,))])
    counted = count_flops(model, {"a": (2, 3, 5, 7), "c": (6, 10)})
    matmul, gemm = 2 * 3 * 5 * 7 * 4, 6 * 10 * 12
    assert counted.macs == matmul + gemm
    assert counted.by_op["Softmax"] == 2 * 3 * 5 * 4
    assert counted.by_op["MatMul"] == 2 * matmul and counted.by_op["Gemm"] == 2 * gemm


def test_matmul_integer_and_data_movement():
    nodes = [helper.make_node("MatMulInteger", ["a", "w"], ["y"]), helper.make_node("Transpose", ["y"], ["t"])]
    w = numpy_helper.from_array(np.zeros((8, 3), np.int8), "w")
    model = _model(nodes, [_vi("a", ["batch", 8], TensorProto.UINT8)], [_vi("t", None, TensorProto.INT32)], [w])
    counted = count_flops(model, {"a": (5, 8)})
    assert counted.macs == 5 * 8 * 3 and counted.other == 0
    assert dict(counted.output_shapes) == {"t": (3, 5)}


def test_missing_input_shape_is_an_error():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["n"])], [_vi("y", ["n"])])
    with pytest.raises(ValueError, match="no shape given"):
        count_flops(model, {})


def test_matmul_peak_probe_runs():
    peak = matmul_peak("int8", threads=1, sizes=(64,), repeats=1)
    assert peak.size == 64 and peak.gops > 0 and "MatMulInteger" in peak.method
    with pytest.raises(ValueError):
        matmul_peak("fp64")
