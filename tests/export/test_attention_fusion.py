"""``attention_fusion`` on a hand-built two-head attention: fused where MultiHeadAttention computes the
same, left alone where the mask's shape would need a broadcast the op does not do; a packed attention
over a padding mask written as one ``Attention``, and not over any other bias."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mmedge.export.parity import onnx_fn
from mmedge.export.quantization.attention_fusion import MS_DOMAIN, attention_ops, fuse_attention, pack_projections

HIDDEN, HEADS = 8, 2


FILL = float(np.finfo(np.float32).min)


def _attention(mask_rows: str | int, *, keep: bool = False) -> onnx.ModelProto:
    """softmax(Q K^T * 0.5 + mask) V over x's projections, written as the dynamo exporter writes it;
    ``keep``: the mask is ``Where(keep, 0, FILL)`` of a boolean input, as the exporter writes a padding mask."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([0, 0, HEADS, HIDDEN // HEADS], np.int64), "split"),
             numpy_helper.from_array(np.array([0, 0, HIDDEN], np.int64), "merge"),
             numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
             numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
             numpy_helper.from_array(np.array(FILL, np.float32), "fill")]
    nodes = [helper.make_node("Where", ["keep", "zero", "fill"], ["mask"])] if keep else []
    for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        inits += [numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32), f"w{name}"),
                  numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32), f"b{name}")]
        nodes += [helper.make_node("MatMul", ["x", f"w{name}"], [f"{name}_mm"]),
                  helper.make_node("Add", [f"{name}_mm", f"b{name}"], [name]),
                  helper.make_node("Reshape", [name, "split"], [f"{name}_4d"]),
                  helper.make_node("Transpose", [f"{name}_4d"], [f"{name}_t"], perm=perm)]
    nodes += [helper.make_node("MatMul", ["q_t", "k_t"], ["scores"]),
              helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
              helper.make_node("Add", ["scaled", "mask"], ["masked"]),
              helper.make_node("Softmax", ["masked"], ["weights"], axis=-1),
              helper.make_node("MatMul", ["weights", "v_t"], ["context"]),
              helper.make_node("Transpose", ["context"], ["context_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["context_t", "merge"], ["y"])]
    mask = helper.make_tensor_value_info("keep" if keep else "mask", TensorProto.BOOL if keep else TensorProto.FLOAT,
                                         ["batch", 1, mask_rows, "tokens"])
    graph = helper.make_graph(nodes, "attention", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", HIDDEN]), mask],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", HIDDEN])], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def _keep(batch: int, tokens: int, rows: int) -> np.ndarray:
    keep = np.ones((batch, 1, rows, tokens), bool)
    keep[1:, ..., tokens // 2:] = False  # padding after the first half, rows after the first
    return keep


def _mask(batch: int, tokens: int, rows: int) -> np.ndarray:
    return np.where(_keep(batch, tokens, rows), 0.0, FILL).astype(np.float32)


def _assert_same_outputs(tmp_path, after: onnx.ModelProto, *, keep: bool) -> None:
    """``after`` (the rewritten graph) gives the hand-built graph's outputs at batch 1 and 3, rows padded."""
    onnx.checker.check_model(after)
    paths = {"before": _attention("tokens", keep=keep), "after": after}
    for name, model in paths.items():
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
    run_before, run_after = (onnx_fn(tmp_path / f"{name}.onnx") for name in paths)
    rng = np.random.default_rng(1)
    for batch, tokens in ((1, 5), (3, 7)):
        mask = {"keep": _keep(batch, tokens, tokens)} if keep else {"mask": _mask(batch, tokens, tokens)}
        case = {"x": rng.standard_normal((batch, tokens, HIDDEN)).astype(np.float32), **mask}
        np.testing.assert_allclose(run_after(case)["y"], run_before(case)["y"], atol=1e-5, rtol=1e-5)


def test_a_fused_and_packed_attention_computes_what_the_graph_did(tmp_path):
    model = _attention("tokens")
    assert (fuse_attention(model), pack_projections(model)) == (1, 1)
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    assert (MS_DOMAIN, "MultiHeadAttention") in ops and ("", "Softmax") not in ops and ops.count(("", "MatMul")) == 1
    _assert_same_outputs(tmp_path, model, keep=False)


def test_a_mask_that_needs_broadcasting_over_queries_is_left_alone():
    """MultiHeadAttention's attention_bias broadcasts batch and heads only: a (batch, 1, 1, keys) mask stays
    unfused (the same graph with a row per query is fused, above)."""
    model = _attention(1)
    nodes = [n.SerializeToString() for n in model.graph.node]
    assert (fuse_attention(model), pack_projections(model)) == (0, 0)
    assert [n.SerializeToString() for n in model.graph.node] == nodes


def test_a_packed_attention_over_a_padding_mask_becomes_one_attention_op(tmp_path):
    """``attention_ops``: the packed projection and the attention over ``Where(keep, 0, FILL)`` as one
    ``com.microsoft.Attention`` (a 0/1 mask, FILL as its mask_filter_value): the same outputs with padding."""
    model = _attention("tokens", keep=True)
    assert (fuse_attention(model), pack_projections(model), attention_ops(model)) == (1, 1, 1)
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    assert (MS_DOMAIN, "Attention") in ops and (MS_DOMAIN, "MultiHeadAttention") not in ops
    assert ("", "MatMul") not in ops and ("", "Split") not in ops
    _assert_same_outputs(tmp_path, model, keep=True)


def test_an_attention_over_any_other_bias_stays_multi_head_attention():
    """A bias given as a float input may be anything (a relative-position bias, ALiBi): not a 0/1 mask."""
    model = _attention("tokens")
    assert (fuse_attention(model), pack_projections(model), attention_ops(model)) == (1, 1, 0)
    assert any(n.op_type == "MultiHeadAttention" for n in model.graph.node)
