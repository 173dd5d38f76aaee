"""ONNX graph surgery shared by the quantization targets: Q/DQ parameters, zero-point
rewrites, embedding-table compression, topological order, and Q/DQ summaries and checks."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmedge.errors import ExportError

__all__ = ["toposort", "drop_unused_initializers", "compress_gather_tables", "shift_activations_to_uint8",
           "make_trt_symmetric", "qdq_summary", "assert_trt_qdq", "present_op_types"]


def toposort(graph: Any) -> None:
    """Reorders ``graph.node`` so every node comes after the producers of its inputs."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise ExportError(f"graph {graph.name!r} has a cycle or an undefined input near node {rest[0].name!r}")
        ordered += done
        ready.update(o for n in done for o in n.output)
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def drop_unused_initializers(graph: Any) -> int:
    """Removes the initializers no node of ``graph`` reads (NNCF, the s8 rewrite and graph rewrites leave
    old scales and weights behind); returns how many."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    return len(unused)


def compress_gather_tables(model: Any, *, min_elements: int = 1 << 20) -> list[str]:
    """Stores large float ``Gather`` tables (word embeddings) as s8 with per-row scales.

    ``Gather(W, ids)`` becomes ``Cast(Gather(W_s8, ids)) * Unsqueeze(Gather(scale, ids), -1)``:
    only the gathered rows are dequantized, so the call costs what the float Gather did,
    while the table is 4x smaller (NNCF's QDQ on the table would dequantize all of it on
    every call; docs/quantization_notes.md). Returns the names of the tables rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    done, nodes = [], []
    for node in model.graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        w = numpy_helper.to_array(table) if table is not None else None
        if w is None or w.dtype != np.float32 or w.ndim != 2 or w.size < min_elements or axis != 0:
            nodes.append(node)
            continue
        scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0  # (rows,)
        q, name = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8), node.input[0]
        model.graph.initializer.remove(table)
        model.graph.initializer.extend([numpy_helper.from_array(q, f"{name}_s8"), numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                                        numpy_helper.from_array(np.array([-1], np.int64), f"{name}_axes")])
        ids, out, p = node.input[1], node.output[0], f"{name}_deq"
        nodes += [helper.make_node("Gather", [f"{name}_s8", ids], [f"{p}_q"], axis=0),
                  helper.make_node("Cast", [f"{p}_q"], [f"{p}_f"], to=onnx.TensorProto.FLOAT),
                  helper.make_node("Gather", [f"{name}_scale", ids], [f"{p}_s"], axis=0),
                  helper.make_node("Unsqueeze", [f"{p}_s", f"{name}_axes"], [f"{p}_su"]),
                  helper.make_node("Mul", [f"{p}_f", f"{p}_su"], [out])]
        done.append(name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return done


def present_op_types(model: Any, types: Sequence[str]) -> list[str]:
    ops = {n.op_type for n in model.graph.node}
    return [t for t in types if t in ops]


def _qdq_pairs(model: Any) -> list[tuple[Any, list[Any]]]:
    """Activation QuantizeLinear nodes (input not an initializer) with their DequantizeLinear consumers."""
    inits = {i.name for i in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return [
        (n, [c for c in consumers.get(n.output[0], []) if c.op_type == "DequantizeLinear"])
        for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    ]


def _set_qparams(model: Any, nodes: Sequence[Any], scale: np.ndarray, zero_point: np.ndarray, tag: str) -> None:
    """Points the scale / zero-point inputs of ``nodes`` at fresh initializers."""
    from onnx import numpy_helper

    base = nodes[0].output[0]
    s_name, z_name = f"{base}_{tag}_scale", f"{base}_{tag}_zero_point"
    model.graph.initializer.extend([numpy_helper.from_array(scale, s_name), numpy_helper.from_array(zero_point, z_name)])
    for node in nodes:
        del node.input[1:]
        node.input.extend([s_name, z_name])
    # The quantized tensor's recorded type changes with the zero point's: drop it, ORT re-infers.
    stale = {nodes[0].output[0]}
    kept = [v for v in model.graph.value_info if v.name not in stale]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def _qparams(model: Any, node: Any) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of a Q/DQ node; a missing zero point is 0 of the ONNX default type."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    scale = numpy_helper.to_array(inits[node.input[1]])
    if len(node.input) > 2 and node.input[2]:
        return scale, numpy_helper.to_array(inits[node.input[2]])
    dtype = np.uint8
    if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # zero point defaults to x's type
        dtype = numpy_helper.to_array(inits[node.input[0]]).dtype
    return scale, np.zeros(scale.shape, dtype)


def shift_activations_to_uint8(model: Any) -> int:
    """Moves int8 activation zero points to uint8 (+128, same scale); returns how many.

    The grid ``scale * (q - zp)`` is unchanged, so this is lossless; ORT's CPU integer
    Conv / MatMul kernels need u8 activations to fuse.
    """
    count = 0
    for q, dqs in _qdq_pairs(model):
        scale, zp = _qparams(model, q)
        if zp.dtype != np.int8:
            continue
        _set_qparams(model, [q, *dqs], scale, (zp.astype(np.int16) + 128).astype(np.uint8), "u8")
        count += 1
    return count


def make_trt_symmetric(model: Any) -> int:
    """Rewrites unsigned zero-point-0 activation quantizers to signed int8 zero point 0.

    The range ``[0, 255 * scale]`` is kept by widening the scale to ``scale * 255 / 127``.
    An asymmetric (non-zero) zero point cannot be made symmetric here and raises.

    Returns:
        How many quantizers were rewritten.
    """
    count = 0
    for q, dqs in _qdq_pairs(model):
        scale, zp = _qparams(model, q)
        if zp.dtype == np.int8 and not zp.any():
            continue
        if zp.any():
            raise ExportError(f"QuantizeLinear {q.name!r} is asymmetric (zero point {zp.ravel()[:4]}); "
                              "build it with the int8-trt policy (NNCF's symmetric preset) to get a TensorRT graph")
        wide = (scale.astype(np.float64) * 255.0 / 127.0).astype(scale.dtype)
        _set_qparams(model, [q, *dqs], wide, np.zeros(zp.shape, np.int8), "s8")
        count += 1
    return count


def qdq_summary(path: str | Path) -> dict[str, Any]:
    """Counts QuantizeLinear / DequantizeLinear nodes, their zero-point dtypes and values.

    Returns:
        ``{"quantize_linear", "dequantize_linear", "activations": {count, zero_point_dtypes,
        zero_point_values, per_channel}, "weights": {...}, "quantized_ops": {op_type: n},
        "metadata": {mmedge.* metadata of the graph}}``;
        activations are QuantizeLinear nodes, weights are DequantizeLinear of initializers.
    """
    import onnx

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    acts = [n for n, _ in _qdq_pairs(model)]
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    ops = Counter(n.op_type for n in model.graph.node
                  if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and dq_outputs & set(n.input))
    return {
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in model.graph.node),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in model.graph.node),
        "activations": _zp_stats(model, acts), "weights": _zp_stats(model, weights), "quantized_ops": dict(ops),
        "metadata": {p.key: p.value for p in model.metadata_props if p.key.startswith("mmedge.")},
    }


def _zp_stats(model: Any, nodes: Sequence[Any]) -> dict[str, Any]:
    dtypes: Counter[str] = Counter()
    values: set[int] = set()
    per_channel = 0
    for node in nodes:
        scale, zp = _qparams(model, node)
        dtypes[zp.dtype.name] += 1
        values.update(int(v) for v in np.unique(zp))
        per_channel += int(scale.size > 1)
    return {"count": len(nodes), "zero_point_dtypes": dict(dtypes), "zero_point_values": sorted(values),
            "per_channel": per_channel}


def assert_trt_qdq(path: str | Path) -> None:
    """Raises ``ExportError`` unless every QuantizeLinear / DequantizeLinear is s8 with zero point 0."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        _, zp = _qparams(model, node)
        if zp.dtype != np.int8 or zp.any():
            raise ExportError(
                f"{Path(path).name}: {node.op_type} {node.name!r} has a {zp.dtype.name} zero point "
                f"{np.unique(zp)[:4].tolist()}; TensorRT needs signed int8 with zero point 0. "
                "Re-export the int8-trt precision (mmedge.export.quantization.tensorrt_qdq)."
            )
