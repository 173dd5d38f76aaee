"""FLOP counts of ONNX graphs, and a measured matrix-multiply peak, for the bench's roofline line.

Counting rules (per graph, at concrete input shapes, shapes from ``onnx.shape_inference``):

- ``Conv`` / ``ConvInteger`` / ``QLinearConv``: ``N * C_out * prod(out_spatial) * (C_in / groups)
  * prod(kernel)`` multiply-accumulates (MACs); ``ConvTranspose`` likewise over the input.
- ``MatMul`` / ``MatMulInteger`` / ``QLinearMatMul`` (batched, broadcast) and ``Gemm``:
  ``batch * M * K * N`` MACs.
- Elementwise, activation, normalization, softmax, Q/DQ ops: ~1 op per output element;
  reductions and pooling: 1 op per input element. Pure data movement (Reshape, Transpose,
  Gather, Concat, Slice, Cast, Shape, ...) counts 0.
- ``flops = 2 * macs + other``. Shapes that shape inference leaves symbolic (e.g. behind a
  data-dependent mask) are read by running the graph once in ONNX Runtime on dummy inputs;
  a node whose shapes are still unknown is listed in ``unknown`` and not counted.

The bench counts the fp32 graph of each component: the arithmetic of the fp16 and int8
graphs is the same (their Q/DQ nodes add elementwise work that is not the point of a roofline).

``matmul_peak`` times a square MatMul (fp32) and MatMulInteger (u8 x s8) in ONNX Runtime at a
given thread count: the peak the runtime's kernels can reach on this machine. It lives on the
export side because building the probe graphs needs ``onnx``, which the runtime never imports.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from mmedge.runtime.backends.ort import create_session

__all__ = ["GraphFlops", "count_flops", "bundle_flops", "bundle_flops_per_sample", "matmul_peak", "MatmulPeak",
           "FLOPS_NOTE"]

FLOPS_NOTE = ("per sample (batch 1) of the fp32 graphs; text at max_length tokens, audio at the clip's frames; "
              "flops = 2 * MACs (Conv/MatMul/Gemm) + ~1 per output element of other ops")

_CONV = {"Conv", "ConvInteger", "QLinearConv"}
_MATMUL = {"MatMul", "MatMulInteger", "QLinearMatMul"}
_PER_INPUT = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1",
              "ReduceSumSquare", "ReduceLogSumExp", "GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool"}
_ZERO = {"Reshape", "Transpose", "Gather", "GatherElements", "GatherND", "Concat", "Slice", "Split", "Squeeze",
         "Unsqueeze", "Shape", "Size", "Constant", "ConstantOfShape", "Identity", "Expand", "Cast", "CastLike",
         "Flatten", "Range", "Tile", "Pad", "Dropout", "ScatterND", "ScatterElements", "NonZero", "Trilu"}


@dataclass(frozen=True)
class GraphFlops:
    """The arithmetic of one graph at concrete input shapes.

    Attributes:
        macs: Multiply-accumulates of Conv / MatMul / Gemm (and their integer / QLinear forms).
        other: ~1 op per output element of elementwise-like ops (1 per input of reductions).
        by_op: FLOPs per op type (``2 * macs`` for MAC ops).
        unknown: Names of nodes whose shapes could not be inferred (not counted).
        output_shapes: Graph output name -> concrete shape (-1 where inference could not tell).
    """

    macs: int
    other: int
    by_op: Mapping[str, int] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()
    output_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        """``2 * macs + other``."""
        return 2 * self.macs + self.other

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"flops": self.flops, "macs": self.macs, "other": self.other, "by_op": dict(self.by_op),
                "unknown": list(self.unknown), "output_shapes": {k: list(v) for k, v in self.output_shapes.items()}}


def _with_shapes(model: onnx.ModelProto, inputs: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: never edit the caller's graph
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if value.name not in inputs:
            raise ValueError(f"no shape given for graph input {value.name!r}; pass inputs={{name: shape}}")
        dims = value.type.tensor_type.shape.dim
        shape = list(inputs[value.name])
        if len(dims) != len(shape):
            raise ValueError(f"input {value.name!r} has rank {len(dims)}, got shape {shape}")
        for dim, size in zip(dims, shape):
            dim.Clear()
            dim.dim_value = int(size)
    for value in model.graph.output:  # stale symbolic output dims would clash with inferred ones
        value.type.tensor_type.ClearField("shape")
    return shape_inference.infer_shapes(model, data_prop=True)


def _shape_table(model: onnx.ModelProto) -> dict[str, tuple[int, ...] | None]:
    table: dict[str, tuple[int, ...] | None] = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        tt = value.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        table[value.name] = dims if all(d >= 0 for d in dims) else None
    for init in model.graph.initializer:
        table[init.name] = tuple(init.dims)
    return table


def _run_for_shapes(model: onnx.ModelProto, inputs: Mapping[str, Sequence[int]], names: set[str]
                    ) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of the values ``names``, by running the graph once on dummy inputs (ones)."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in probe.graph.output}
    wanted = sorted(names - present)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted)
    dtypes = {v.name: helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type) for v in probe.graph.input}
    feed = {k: np.ones(tuple(v), dtype=dtypes[k]) for k, v in inputs.items() if k in dtypes}
    sess = create_session(probe.SerializeToString())
    names_out = [o.name for o in sess.get_outputs()]
    return {n: tuple(int(d) for d in np.shape(a)) for n, a in zip(names_out, sess.run(None, feed)) if n in names}


def _fill_unknown(inferred: onnx.ModelProto, table: dict[str, tuple[int, ...] | None],
                  inputs: Mapping[str, Sequence[int]]) -> None:
    missing = {n for node in inferred.graph.node for n in list(node.input) + list(node.output)
               if n and table.get(n) is None}
    if missing:
        try:
            table.update(_run_for_shapes(inferred, inputs, missing))
        except Exception:  # noqa: BLE001  (a graph ORT cannot run: those nodes stay in `unknown`)
            pass


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _conv_macs(node: onnx.NodeProto, shapes: list[tuple[int, ...] | None]) -> int | None:
    x, w, y = shapes[0], shapes[1], shapes[-1]
    if node.op_type == "QLinearConv":
        x, w = shapes[0], shapes[3]
    if x is None or w is None or y is None:
        return None
    groups = int(_attr(node, "group", 1))
    if node.op_type == "ConvTranspose":  # w: (C_in, C_out/groups, k...)
        return int(math.prod(x) * w[1] * math.prod(w[2:]))
    return int(y[0] * y[1] * math.prod(y[2:]) * (x[1] // groups) * math.prod(w[2:]))


def _matmul_macs(a: tuple[int, ...] | None, b: tuple[int, ...] | None, y: tuple[int, ...] | None) -> int | None:
    if a is None or b is None:
        return None
    k = a[-1]
    if y is not None:
        return int(math.prod(y) * k)  # every output element is a K-long dot product
    m = a[-2] if len(a) > 1 else 1
    n = b[-1] if len(b) > 1 else 1
    batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])) if len(a) > 2 or len(b) > 2 else ()
    return int(math.prod(batch) * m * k * n)


def _gemm_macs(node: onnx.NodeProto, shapes: list[tuple[int, ...] | None]) -> int | None:
    a, b = shapes[0], shapes[1]
    if a is None or b is None:
        return None
    m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
    n = b[0] if _attr(node, "transB", 0) else b[1]
    return int(m * k * n)


def _node_macs(node: onnx.NodeProto, shapes: list[tuple[int, ...] | None]) -> int | None:
    if node.op_type in _CONV or node.op_type == "ConvTranspose":
        return _conv_macs(node, shapes)
    if node.op_type == "QLinearMatMul":
        return _matmul_macs(shapes[0], shapes[3], shapes[-1])
    if node.op_type in _MATMUL:
        return _matmul_macs(shapes[0], shapes[1], shapes[-1])
    return _gemm_macs(node, shapes)


def _node_other(node: onnx.NodeProto, ins: list[tuple[int, ...] | None], outs: list[tuple[int, ...] | None]
                ) -> int | None:
    if node.op_type in _ZERO:
        return 0
    ref = ins[0] if node.op_type in _PER_INPUT else (outs[0] if outs else None)
    return None if ref is None else int(math.prod(ref))


def count_flops(model: onnx.ModelProto | str | Path, inputs: Mapping[str, Sequence[int]]) -> GraphFlops:
    """Counts the FLOPs of an ONNX graph at concrete input shapes (rules: module docstring).

    Args:
        model: A ``ModelProto`` or the path of an ``.onnx`` file.
        inputs: Graph input name -> concrete shape (e.g. ``{"pixel_values": (1, 3, 128, 128)}``).

    Returns:
        The counts, with the graph's inferred output shapes.

    Raises:
        ValueError: a graph input without a shape, or of another rank.
    """
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    inferred = _with_shapes(proto, inputs)
    table = _shape_table(inferred)
    table.update({k: tuple(map(int, v)) for k, v in inputs.items()})
    _fill_unknown(inferred, table, inputs)
    macs = other = 0
    by_op: dict[str, int] = {}
    unknown: list[str] = []
    for node in inferred.graph.node:
        ins = [table.get(n) if n else None for n in node.input]
        outs = [table.get(n) for n in node.output]
        is_mac = node.op_type in _CONV | _MATMUL | {"Gemm", "ConvTranspose"}
        count = _node_macs(node, ins + outs[:1]) if is_mac else _node_other(node, ins, outs)
        if count is None:
            unknown.append(node.name or node.op_type)
            continue
        macs, other = (macs + count, other) if is_mac else (macs, other + count)
        by_op[node.op_type] = by_op.get(node.op_type, 0) + (2 * count if is_mac else count)
    outputs = {o.name: table.get(o.name) or (-1,) for o in inferred.graph.output}
    return GraphFlops(macs, other, MappingProxyType(by_op), tuple(unknown), MappingProxyType(outputs))


def bundle_flops(root: Path, manifest: Any, encoder_inputs: Mapping[str, Mapping[str, Sequence[int]]],
                 *, precision: str = "fp32") -> dict[str, GraphFlops]:
    """FLOPs of every component of a bundle: encoders at the given input shapes, heads fed by them.

    Args:
        root: The bundle folder.
        manifest: Its ``mmedge.runtime.manifest.Manifest`` (``Bundle.manifest``).
        encoder_inputs: modality -> {input name -> shape}, e.g. from the preprocessed inputs of
            one batch. Encoders of modalities not given are skipped (with their members' heads).
        precision: Which graphs to count (``fp32``: the same arithmetic as the others).

    Returns:
        ``encoder.<modality>`` / ``head.<member>`` -> counts.
    """
    out: dict[str, GraphFlops] = {}
    feats: dict[str, tuple[int, ...]] = {}
    for modality, shapes in encoder_inputs.items():
        entry = manifest.encoders[modality].graphs[precision]
        counted = count_flops(Path(root) / str(entry.file), shapes)
        out[f"encoder.{modality}"] = counted
        feats.update(counted.output_shapes)
    for member in manifest.members:
        if not all(n in feats and -1 not in feats[n] for n in member.inputs):
            continue
        entry = member.graphs[precision]
        out[f"head.{member.name}"] = count_flops(Path(root) / str(entry.file), {n: feats[n] for n in member.inputs})
    return out


def _dim(d: int | str, spec: Any) -> int:
    if isinstance(d, int):
        return d
    sizes = {"batch": 1, "tokens": getattr(spec, "max_length", 0), "frames": getattr(spec, "n_frames", 0)}
    if not sizes.get(d):
        raise ValueError(f"cannot size the dynamic axis {d!r} of an encoder input (known: batch, tokens, frames)")
    return int(sizes[d])


def bundle_flops_per_sample(bundle: Any, *, precision: str = "fp32") -> dict[str, GraphFlops]:
    """``bundle_flops`` at batch 1 for an opened ``mmedge.runtime.Bundle``.

    Dynamic axes are sized from the bundle's specs: ``tokens`` = text ``max_length`` (the
    tokenizer pads to it), ``frames`` = the audio clip's frame count.
    """
    shapes = {m: {t.name: tuple(_dim(d, bundle.specs[m]) for d in t.shape) for t in e.inputs}
              for m, e in bundle.encoders.items()}
    return bundle_flops(bundle.root, bundle.manifest, shapes, precision=precision)


@dataclass(frozen=True)
class MatmulPeak:
    """Best measured matrix-multiply throughput.

    Attributes:
        gops: Giga-operations per second (2 * M * K * N per multiply).
        size: Side of the square matrices of the best run.
        method: What was timed (kernel, threads).
    """

    gops: float
    size: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"gops": self.gops, "size": self.size, "method": self.method}


def _probe_model(n: int, kind: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    if kind == "int8":
        w = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w")
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "peak", [helper.make_tensor_value_info("a", a_type, [n, n])],
                              [helper.make_tensor_value_info("y", y_type, [n, n])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _time_probe(n: int, kind: str, threads: int | None, repeats: int) -> float:
    sess = create_session(_probe_model(n, kind).SerializeToString(), threads=threads or None)
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (n, n), dtype=np.uint8) if kind == "int8" else rng.standard_normal((n, n)).astype(np.float32)
    sess.run(None, {"a": a})  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, {"a": a})
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best / 1e9


def matmul_peak(kind: str = "fp32", *, threads: int | None = None, sizes: Iterable[int] = (256, 512, 1024),
                repeats: int = 5) -> MatmulPeak:
    """Measures the best square-MatMul throughput of ONNX Runtime's CPU kernels.

    Args:
        kind: ``"fp32"`` (MatMul) or ``"int8"`` (MatMulInteger, u8 activations x s8 weights).
        threads: ORT intra-op threads (None: ORT's default, all cores).
        sizes: Matrix sides to try; the best run of the best size is kept.
        repeats: Timed runs per size (after one warm-up run).

    Returns:
        The peak in GOP/s and how it was measured.
    """
    if kind not in ("fp32", "int8"):
        raise ValueError(f"kind must be 'fp32' or 'int8', got {kind!r}")
    results = {n: _time_probe(n, kind, threads, repeats) for n in sizes}
    best = max(results, key=results.__getitem__)
    op = "MatMulInteger u8 x s8" if kind == "int8" else "MatMul fp32"
    return MatmulPeak(results[best], best, f"onnxruntime {op}, {threads or 'default'} threads, best of "
                                            f"{repeats} runs at n={best} (tried {list(results)})")
