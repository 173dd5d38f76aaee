"""Scaled dot-product attention fused into ONNX Runtime's ``com.microsoft.MultiHeadAttention``.

The dynamo exporter writes each self-attention of a transformer encoder as ~12 small nodes
(``Reshape`` / ``Transpose`` of Q, K and V, ``MatMul``, ``Mul`` by the scale, ``Add`` of the mask,
``Softmax``, ``MatMul``, ``Transpose`` / ``Reshape`` back), which ONNX Runtime's own optimizer
does not fuse on that graph, and on one CPU thread they cost as much as the Q/K/V projections
(``benchmarks/peers.json``, ``op_ms_b1``). ``fuse_attention`` finds that pattern around every
``Softmax`` and replaces it with one ``MultiHeadAttention`` node (query, key, value of shape
``(batch, tokens, hidden)``; the mask as its ``attention_bias``; the graph's own scale), which
ONNX Runtime's CPU provider runs as one kernel. A fake-quantized Q, K or V (NNCF's
``QuantizeLinear`` -> ``DequantizeLinear`` on the projection's output) is taken before its
quantizer: the attention runs in float either way, so the pair only added rounding and two nodes.

``attention_ops`` then writes a packed attention over a padding mask as one ``com.microsoft.Attention``
(``int8-dynamic``, whose quantizer makes it a ``QAttention``).

Only the ONNX Runtime CPU targets use it (``int8``, ``int8-dynamic``): TensorRT does not run
com.microsoft ops (OpenVINO reads some; export checks each graph on it).
A pattern that differs anywhere (other permutations, a shared intermediate, no static head
count) is left as it was; the function returns how many attentions it fused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmedge.export.quantization.graph_surgery import drop_unused_initializers

__all__ = ["fuse_attention", "pack_projections", "attention_ops", "MS_DOMAIN"]

MS_DOMAIN = "com.microsoft"
_SPLIT = [0, 2, 1, 3]      # (B, S, N, D) -> (B, N, S, D), and back
_SPLIT_KT = [0, 2, 3, 1]   # (B, S, N, D) -> (B, N, D, S)


@dataclass
class _Attention:
    """One matched attention: its inputs, scale, head count, and the nodes it replaces."""

    query: str
    key: str
    value: str
    bias: str
    output: str
    scale: float
    heads: int
    nodes: list[Any]


class _Graph:
    """Producer / consumer / constant look-ups over one ONNX graph."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self.consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                     for v in (*graph.input, *graph.value_info, *graph.output)}

    def node(self, tensor: str, op: str) -> Any | None:
        """The producer of ``tensor`` if it is an ``op`` whose output nothing else reads."""
        n = self.producer.get(tensor)
        if n is None or n.op_type != op or tensor in self.outputs or len(self.consumers.get(tensor, [])) != 1:
            return None
        return n

    def only_consumer(self, tensor: str, op: str) -> Any | None:
        """The single consumer of ``tensor`` if it is an ``op``."""
        users = self.consumers.get(tensor, [])
        ok = len(users) == 1 and users[0].op_type == op and tensor not in self.outputs
        return users[0] if ok else None


def _perm(node: Any) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _heads(g: _Graph, tensor: str, perm: list[int]) -> tuple[Any, Any, str] | None:
    """``Transpose(perm)(Reshape(x))`` feeding an attention MatMul: (transpose, reshape, x)."""
    t = g.node(tensor, "Transpose")
    r = g.node(t.input[0], "Reshape") if t is not None and _perm(t) == perm else None
    return (t, r, r.input[0]) if r is not None else None


def _unquantized(g: _Graph, tensor: str) -> tuple[str, list[Any]]:
    """``x`` for a ``DequantizeLinear(QuantizeLinear(x))`` pair read only here, else ``tensor``."""
    dq = g.node(tensor, "DequantizeLinear")
    q = g.node(dq.input[0], "QuantizeLinear") if dq is not None else None
    if q is None or list(q.input[1:]) != list(dq.input[1:]):
        return tensor, []
    return q.input[0], [q, dq]


def _scale(g: _Graph, node: Any) -> float | None:
    """The scalar a ``Mul`` multiplies (or a ``Div`` divides) the scores by."""
    c = g.consts.get(node.input[1])
    if c is None or c.size != 1 or node.op_type not in ("Mul", "Div"):
        return None
    v = float(c.reshape(()))
    return v if node.op_type == "Mul" else (1.0 / v if v else None)


def _match(g: _Graph, softmax: Any) -> _Attention | None:
    """The attention around ``softmax``, or None where the graph differs from the pattern."""
    if next((a.i for a in softmax.attribute if a.name == "axis"), -1) not in (-1, 3):
        return None
    add = g.node(softmax.input[0], "Add")
    scaled = next((n for n in (g.producer.get(i) for i in add.input) if n is not None and n.op_type in ("Mul", "Div")),
                  None) if add is not None else None
    if scaled is None or g.node(scaled.output[0], scaled.op_type) is None or (scale := _scale(g, scaled)) is None:
        return None
    bias = add.input[1] if add.input[0] == scaled.output[0] else add.input[0]
    qk = g.node(scaled.input[0], "MatMul")
    q, k = (_heads(g, qk.input[0], _SPLIT), _heads(g, qk.input[1], _SPLIT_KT)) if qk is not None else (None, None)
    av = g.only_consumer(softmax.output[0], "MatMul")
    v = _heads(g, av.input[1], _SPLIT) if av is not None and av.input[0] == softmax.output[0] else None
    back = g.only_consumer(av.output[0], "Transpose") if v is not None else None
    merge = g.only_consumer(back.output[0], "Reshape") if back is not None and _perm(back) == _SPLIT else None
    if q is None or k is None or merge is None or (heads := _head_count(g, q, k, v, merge, bias)) is None:
        return None
    (query, qq), (key, kq), (value, vq) = (_unquantized(g, x[2]) for x in (q, k, v))
    nodes = [softmax, add, scaled, qk, av, back, merge, *q[:2], *k[:2], *v[:2], *qq, *kq, *vq]
    return _Attention(query, key, value, bias, merge.output[0], scale, heads, nodes)


def _head_count(g: _Graph, q: tuple, k: tuple, v: tuple, merge: Any, bias: str) -> int | None:
    """The head count where the shapes say the pattern is multi-head attention as ``MultiHeadAttention``
    computes it: Q, K and V split into the same (batch, tokens, heads, size), merged back to rank 3, and
    a rank-4 mask with a row per query and a column per key (the op broadcasts only batch and heads)."""
    split = [g.dims.get(x[1].output[0]) for x in (q, k, v)]
    mask, merged = g.dims.get(bias), g.dims.get(merge.output[0])
    if any(d is None or len(d) != 4 for d in split) or mask is None or len(mask) != 4 or merged is None:
        return None
    heads = {d[2] for d in split}
    if len(heads) != 1 or None in heads or len(merged) != 3 or 1 in mask[2:]:
        return None
    return heads.pop()


def _mha(att: _Attention, index: int) -> Any:
    from onnx import helper

    return helper.make_node("MultiHeadAttention", [att.query, att.key, att.value, "", "", att.bias], [att.output],
                            name=f"mmedge_attention_{index}", domain=MS_DOMAIN, num_heads=att.heads, scale=att.scale)


def fuse_attention(model: Any) -> int:
    """Fuses every matched self-attention of ``model`` (in place); returns how many."""
    from onnx import helper

    g = _Graph(model.graph)
    found = [a for a in (_match(g, n) for n in model.graph.node if n.op_type == "Softmax") if a is not None]
    if not found:
        return 0
    removed = {id(n) for a in found for n in a.nodes}
    at = {id(a.nodes[6]): _mha(a, i) for i, a in enumerate(found)}  # where each attention's last Reshape was
    kept = [at.get(id(n), n) for n in model.graph.node if id(n) not in removed or id(n) in at]
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    _replace_nodes(model.graph, kept)
    return len(found)


@dataclass
class _Projection:
    """``Add(MatMul(x, W), b)`` with ``W`` a constant or ``DequantizeLinear`` of constants."""

    x: str
    weights: list[str]  # W, or DequantizeLinear's (values, scale, zero point)
    axis: int | None     # DequantizeLinear's axis; None: W is float
    bias: str
    nodes: list[Any]


def _projection(g: _Graph, tensor: str) -> _Projection | None:
    add = g.node(tensor, "Add")
    mm = next((n for n in (g.node(i, "MatMul") for i in add.input) if n is not None), None) if add else None
    bias = next((i for i in add.input if i in g.consts), None) if mm is not None else None
    if bias is None or g.consts[bias].ndim != 1:
        return None
    dq = g.node(mm.input[1], "DequantizeLinear")
    if dq is not None and len(dq.input) == 3 and all(i in g.consts for i in dq.input):
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        return _Projection(mm.input[0], list(dq.input), axis % 2, bias, [add, mm, dq])
    w = g.consts.get(mm.input[1])
    return _Projection(mm.input[0], [mm.input[1]], None, bias, [add, mm]) if w is not None and w.ndim == 2 else None


def _packable(g: _Graph, mha: Any) -> list[_Projection] | None:
    """Q, K and V's projections of one fused attention if they can be one MatMul: the same input,
    weights stored alike (float, or int8 per output channel), biases."""
    parts = [_projection(g, t) for t in mha.input[:3]]
    if any(p is None for p in parts):
        return None
    same = len({p.x for p in parts}) == 1 and len({(p.axis, len(p.weights)) for p in parts}) == 1
    per_channel = parts[0].axis in (None, 1) and all(g.consts[w].ndim == 1 for p in parts for w in p.weights[1:])
    return parts if same and per_channel else None


def _concat(g: _Graph, names: list[str], name: str) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.concatenate([g.consts[n] for n in names], axis=-1), name)


def pack_projections(model: Any) -> int:
    """Packs the Q, K and V projections of every fused attention of ``model`` into one ``MatMul``
    (weights, per-channel scales and biases concatenated; a ``Split`` feeds the attention), so ONNX
    Runtime runs one GEMM where it ran three on the same input; the integer products are the same.
    Returns how many attentions were packed."""
    from onnx import helper, numpy_helper

    g, packed = _Graph(model.graph), {}
    for k, mha in enumerate(n for n in model.graph.node if n.op_type == "MultiHeadAttention" and n.domain == MS_DOMAIN):
        parts = _packable(g, mha)
        if parts is None:
            continue
        p = f"mmedge_qkv_{k}"
        inits = [_concat(g, [q.weights[i] for q in parts], f"{p}_w{i}") for i in range(len(parts[0].weights))]
        sizes = [g.consts[q.bias].shape[0] for q in parts]
        inits += [_concat(g, [q.bias for q in parts], f"{p}_b"),
                  numpy_helper.from_array(np.asarray(sizes, np.int64), f"{p}_split")]
        model.graph.initializer.extend(inits)
        weight = [f"{p}_w0"]
        nodes = []
        if parts[0].axis is not None:
            nodes.append(helper.make_node("DequantizeLinear", [i.name for i in inits[:3]], [f"{p}_wq"], axis=1))
            weight = [f"{p}_wq"]
        nodes += [helper.make_node("MatMul", [parts[0].x, *weight], [f"{p}_mm"]),
                  helper.make_node("Add", [f"{p}_mm", f"{p}_b"], [f"{p}_add"]),
                  helper.make_node("Split", [f"{p}_add", f"{p}_split"], list(mha.input[:3]), axis=-1)]
        packed[id(mha)] = (nodes, {id(n) for q in parts for n in q.nodes})
    if packed:
        gone = set().union(*(ids for _, ids in packed.values()))
        kept = [m for n in model.graph.node if id(n) not in gone for m in (*packed.get(id(n), ([], ()))[0], n)]
        _replace_nodes(model.graph, kept)
    return len(packed)


def attention_ops(model: Any) -> int:
    """Turns each packed float projection and its attention (``pack_projections``' ``MatMul`` + ``Add`` +
    ``Split`` feeding a ``MultiHeadAttention``) into one ``com.microsoft.Attention`` (the packed weight and
    bias as its own, the graph's scale), where the attention's bias is a padding mask: ``Where(keep, 0,
    fill)`` with one row per query (``(batch, 1, queries, keys)``), given to ``Attention`` as the 0/1
    ``mask_index`` it is, with ``fill`` as its ``mask_filter_value``. ``quantize_dynamic`` makes each one a
    ``QAttention`` (the projection's integer GEMM and the attention in one kernel, as in Optimum's graph).
    Float weights only (``int8-dynamic``'s graph before quantization); returns how many it turned."""
    from onnx import TensorProto, helper, numpy_helper

    g, turned, masks, nodes = _Graph(model.graph), 0, set(), []
    for node in model.graph.node:
        parts = _packed(g, node) if node.op_type == "MultiHeadAttention" and node.domain == MS_DOMAIN else None
        if parts is None:
            nodes.append(node)
            continue
        (x, weight, bias, fill), attention_bias = parts, node.input[5]
        mask = f"{attention_bias}_mmedge_keep"
        if attention_bias not in masks:  # one 0/1 mask per bias, shared by the layers that read it
            masks.add(attention_bias)
            nodes += [helper.make_node("Equal", [attention_bias, f"{mask}_zero"], [f"{mask}_eq"]),
                      helper.make_node("Cast", [f"{mask}_eq"], [f"{mask}_i"], to=TensorProto.INT32),
                      helper.make_node("Squeeze", [f"{mask}_i", f"{mask}_axis"], [mask])]
            model.graph.initializer.extend([numpy_helper.from_array(np.array(0, np.float32), f"{mask}_zero"),
                                            numpy_helper.from_array(np.array([1], np.int64), f"{mask}_axis")])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.append(helper.make_node("Attention", [x, weight, bias, mask], list(node.output), name=node.name,
                                      domain=MS_DOMAIN, num_heads=attrs["num_heads"], scale=attrs["scale"],
                                      mask_filter_value=fill))
        turned += 1
    if turned:
        _replace_nodes(model.graph, nodes)  # the Split, Add and MatMul are read by nothing now
    return turned


def _packed(g: _Graph, mha: Any) -> tuple[str, str, str, float] | None:
    """(input, packed float weight, packed bias, mask fill) of a ``MultiHeadAttention`` fed by ``pack_projections``'
    ``Split`` of equal parts, whose only other input is a padding mask (``_padding_fill``); else None."""
    fill = _padding_fill(g, mha.input[5]) if len(mha.input) == 6 and not any(mha.input[3:5]) else None
    if fill is None:
        return None
    split = g.producer.get(mha.input[0])
    sizes = g.consts.get(split.input[1]) if split is not None and split.op_type == "Split" and len(split.input) > 1 else None
    if sizes is None or list(split.output) != list(mha.input[:3]) or len(set(sizes.tolist())) != 1 or \
            any(len(g.consumers.get(o, [])) != 1 for o in split.output):
        return None
    add = g.node(split.input[0], "Add")
    matmul = g.node(add.input[0], "MatMul") if add is not None else None
    if matmul is None or len(g.dims.get(matmul.input[0]) or ()) != 3:  # Attention takes (batch, tokens, hidden)
        return None
    weight, bias = g.consts.get(matmul.input[1]), g.consts.get(add.input[1])
    ok = weight is not None and bias is not None and weight.dtype == np.float32 and weight.ndim == 2 and \
        bias.shape == (weight.shape[1],) == (int(sizes.sum()),)
    return (matmul.input[0], matmul.input[1], add.input[1], fill) if ok else None


def _padding_fill(g: _Graph, bias: str) -> float | None:
    """The fill value if ``bias`` is ``Where(keep, 0, fill)`` of shape (batch, 1, queries, keys) with a
    large negative scalar ``fill`` (a padding mask: 0 where a key is attended); else None."""
    where = g.producer.get(bias)
    dims = g.dims.get(bias)
    if where is None or where.op_type != "Where" or dims is None or len(dims) != 4 or dims[1] != 1:
        return None
    zero, fill = g.consts.get(where.input[1]), g.consts.get(where.input[2])
    if zero is None or fill is None or zero.any() or fill.size != 1 or float(fill.reshape(())) > -1e4:
        return None
    return float(fill.reshape(()))


def _replace_nodes(graph: Any, nodes: list[Any]) -> None:
    """Sets ``graph``'s nodes to ``nodes`` less those nothing reads any more (shape
    computations of the removed Reshapes), and drops the initializers and shapes left unused."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in nodes for i in n.input} | outputs
        live = [n for n in nodes if any(o in used for o in n.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del graph.node[:]
    graph.node.extend(nodes)
    drop_unused_initializers(graph)
    produced = {o for n in nodes for o in n.output}
    for info in [v for v in graph.value_info if v.name not in produced]:
        graph.value_info.remove(info)
