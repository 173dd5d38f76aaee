"""What quantization needs to know about a graph, read from the graph itself (op types, shapes).

Any encoder (mmedge's, a plug-in's, a user's module, a Hugging Face model) gets the treatment
its structure calls for, not the treatment of a name:

- attention (a Softmax over a MatMul of two activations) -> NNCF's transformer scheme;
- float ``Gather`` tables (embeddings) -> Gather kept out of NNCF's int8, and large tables
  stored s8 per row by the CPU target (``graph_surgery.compress_gather_tables``);
- depthwise convolutions -> counted and reported: activations are per tensor for every graph
  (ORT's integer conv and TensorRT have no per-channel activations).

For mmedge's reference encoders this gives what was set by hand before: EfficientNet-Lite0 and
the audio CNN are "cnn", all-MiniLM-L6-v2 is "transformer" with its word table compressed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["GraphTraits", "graph_traits", "derived_model_type", "table_threshold", "TABLE_ELEMENTS", "TABLE_SHARE"]

TABLE_ELEMENTS = 1 << 20  # a Gather table this large is compressed whatever the graph...
TABLE_SHARE = 0.25  # ...and so is one holding this share of the graph's float weights
_FLOAT = 1  # onnx.TensorProto.FLOAT
_SCORE_OPS = {"Add", "Sub", "Mul", "Div", "Where", "Cast", "Identity"}  # between scores and Softmax
_HOPS = 5


@dataclass(frozen=True)
class GraphTraits:
    """Structure of one graph, as quantization uses it.

    Attributes:
        model_type: "transformer" (has attention) or "cnn" (the NNCF scheme for an encoder).
        attention: Softmax nodes fed by a MatMul of two activations.
        embedding_tables: ``(initializer name, rows, columns)`` of float tables read by Gather.
        depthwise_convs: Conv nodes with one input channel per group.
        float_weights: Elements of float initializers.
    """

    model_type: str
    attention: int
    embedding_tables: tuple[tuple[str, int, int], ...]
    depthwise_convs: int
    float_weights: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the manifest's ``graph`` entry)."""
        d = asdict(self)
        d["embedding_tables"] = [{"name": n, "shape": [r, c]} for n, r, c in self.embedding_tables]
        return d


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _is_activation(name: str, inits: set[str], producers: dict[str, Any]) -> bool:
    return name not in inits and getattr(producers.get(name), "op_type", "") != "Constant"


def _fed_by_scores(node: Any, inits: set[str], producers: dict[str, Any]) -> bool:
    """True when a MatMul of two activations is at most ``_HOPS`` score ops above ``node``."""
    frontier = [producers.get(i) for i in node.input]
    for _ in range(_HOPS):
        nxt = []
        for p in filter(None, frontier):
            if p.op_type == "MatMul" and all(_is_activation(i, inits, producers) for i in p.input):
                return True
            if p.op_type in _SCORE_OPS:
                nxt += [producers.get(i) for i in p.input]
        frontier = nxt
    return False


def _depthwise(node: Any, shapes: dict[str, tuple[int, ...]]) -> bool:
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
    return group > 1 and weight is not None and len(weight) >= 2 and weight[1] == 1


def graph_traits(model: Any) -> GraphTraits:
    """Reads a graph's ``GraphTraits`` (``model``: an ``onnx.ModelProto`` or a path)."""
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    shapes = {i.name: tuple(int(d) for d in i.dims) for i in graph.initializer}
    floats = {i.name for i in graph.initializer if i.data_type == _FLOAT}
    producers = _producers(graph)
    attention = sum(n.op_type == "Softmax" and _fed_by_scores(n, inits, producers) for n in graph.node)
    tables = sorted({(n.input[0], *shapes[n.input[0]]) for n in graph.node
                     if n.op_type == "Gather" and n.input[0] in floats and len(shapes[n.input[0]]) == 2})
    return GraphTraits(
        model_type="transformer" if attention else "cnn", attention=int(attention), embedding_tables=tuple(tables),
        depthwise_convs=sum(n.op_type == "Conv" and _depthwise(n, shapes) for n in graph.node),
        float_weights=int(sum(_size(shapes[n]) for n in floats)))


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def derived_model_type(path: str | Path) -> str:
    """The NNCF scheme of an encoder graph: "transformer" with attention, else "cnn"."""
    return graph_traits(path).model_type


def table_threshold(traits: GraphTraits) -> int:
    """Smallest Gather table (elements) worth storing s8 per row: 1M, or a quarter of the weights."""
    return max(1, min(TABLE_ELEMENTS, int(traits.float_weights * TABLE_SHARE)))
