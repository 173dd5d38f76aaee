"""The merged heads graph (``mmedge.runtime.merged_heads``): every member head and the ensemble rule as
one ONNX graph per precision, so the ensemble costs one session (one TensorRT engine) over the encoders.

It is composed from the heads' own graphs of that precision, as the manifest lists them (``mixed``: the
graph it chose per head; a reverted or fallen-back head: the graph its entry uses), each with its names
prefixed by the member's (``onnx.compose.add_prefix``) and kept as built, Q/DQ and float16 included;
then the rule of ``mmedge.runtime.ensemble`` as ONNX ops, in float32: each member's temperature-scaled
softmax (an output of its own), and ``weighted_mean`` / ``soft_vote`` (weighted sum), ``majority_vote``
(weighted one-hot votes, ties by the mean probability) or ``stacking`` (logistic regression on the
log-probabilities). Its parity is checked against the separate head graphs plus the runtime's numpy
rule (``ensemble_prediction``) on the export's parity cases and recorded in its entry.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mmedge.errors import ParityError
from mmedge.export.components import _summary
from mmedge.export.parity import ParityReport, case_name, compare_outputs
from mmedge.progress import log
from mmedge.runtime.backends.ort import create_session
from mmedge.runtime.ensemble import EnsembleMethod, Stacking, effective_method, ensemble_prediction
from mmedge.runtime.manifest import GraphEntry, Manifest, MemberInfo
from mmedge.runtime.merged_heads import ENSEMBLE_OUTPUT, HEADS, member_output

__all__ = ["MERGED_ATOL", "compose_heads", "with_heads_graphs"]

MERGED_ATOL = 1e-5  # merged graph vs separate heads + numpy rule, on probabilities
Arrays = dict[str, np.ndarray]
_P = "ensemble/"  # prefix of the rule's own nodes and constants


def _const(name: str, value: Any, dtype: Any = np.float32) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), _P + name)


def _weighted_sum(probs: Sequence[str], w: np.ndarray, out: str, tag: str) -> tuple[list, list]:
    nodes = [helper.make_node("Mul", [p, _P + f"{tag}_w{k}"], [_P + f"{tag}_{k}"]) for k, p in enumerate(probs)]
    nodes.append(helper.make_node("Sum", [_P + f"{tag}_{k}" for k in range(len(probs))], [out]))
    return nodes, [_const(f"{tag}_w{k}", w[k]) for k in range(len(probs))]


def _mean_rule(probs: Sequence[str], w: np.ndarray, _: Stacking | None, __: int) -> tuple[list, list]:
    return _weighted_sum(probs, w, ENSEMBLE_OUTPUT, "mean")


def _majority_rule(probs: Sequence[str], w: np.ndarray, _: Stacking | None, classes: int) -> tuple[list, list]:
    nodes, inits = [], [_const("depth", [classes], np.int64), _const("onehot", [0.0, 1.0])]
    for k, p in enumerate(probs):
        nodes.append(helper.make_node("ArgMax", [p], [_P + f"vote_{k}"], axis=-1, keepdims=0))
        nodes.append(helper.make_node("OneHot", [_P + f"vote_{k}", _P + "depth", _P + "onehot"], [_P + f"votes_{k}"],
                                      axis=-1))
    share_nodes, share_inits = _weighted_sum([_P + f"votes_{k}" for k in range(len(probs))], w, _P + "share", "share")
    nodes += share_nodes + [helper.make_node("Mean", list(probs), [_P + "mean"]),
                            helper.make_node("Mul", [_P + "mean", _P + "tie"], [_P + "tie_term"]),
                            helper.make_node("Add", [_P + "share", _P + "tie_term"], [_P + "votes"]),
                            helper.make_node("Div", [_P + "votes", _P + "norm"], [ENSEMBLE_OUTPUT])]
    return nodes, inits + share_inits + [_const("tie", 1e-6), _const("norm", 1 + 1e-6)]


def _stacking_rule(probs: Sequence[str], _: np.ndarray, stacking: Stacking | None, __: int) -> tuple[list, list]:
    nodes = []
    for k, p in enumerate(probs):
        nodes.append(helper.make_node("Add", [p, _P + "eps"], [_P + f"eps_{k}"]))
        nodes.append(helper.make_node("Log", [_P + f"eps_{k}"], [_P + f"log_{k}"]))
    nodes += [helper.make_node("Concat", [_P + f"log_{k}" for k in range(len(probs))], [_P + "feats"], axis=1),
              helper.make_node("MatMul", [_P + "feats", _P + "coef_t"], [_P + "z0"]),
              helper.make_node("Add", [_P + "z0", _P + "intercept"], [_P + "z"]),
              helper.make_node("Softmax", [_P + "z"], [ENSEMBLE_OUTPUT], axis=-1)]
    return nodes, [_const("eps", 1e-12), _const("coef_t", stacking.coef.T), _const("intercept", stacking.intercept)]


_ONNX_RULES: dict[EnsembleMethod, Callable[[Sequence[str], np.ndarray, Stacking | None, int], tuple[list, list]]] = {
    EnsembleMethod.WEIGHTED_MEAN: _mean_rule,
    EnsembleMethod.SOFT_VOTE: _mean_rule,  # with equal weights (below)
    EnsembleMethod.MAJORITY_VOTE: _majority_rule,
    EnsembleMethod.STACKING: _stacking_rule,
}


def _member_probs(model: onnx.ModelProto, member: MemberInfo) -> tuple[list, list]:
    """Nodes turning a prefixed head's logits into its calibrated probabilities (an output of the graph)."""
    logits = f"{member.name}/{member.output}"
    kind = next(o.type.tensor_type.elem_type for o in model.graph.output if o.name == logits)
    cast = [helper.make_node("Cast", [logits], [logits + "_f32"], to=TensorProto.FLOAT)] if kind != TensorProto.FLOAT \
        else []
    src = logits + "_f32" if cast else logits
    return cast + [helper.make_node("Div", [src, _P + f"t_{member.name}"], [_P + f"scaled_{member.name}"]),
                   helper.make_node("Softmax", [_P + f"scaled_{member.name}"], [member_output(member.name)], axis=-1)
                   ], [_const(f"t_{member.name}", member.temperature)]


def compose_heads(heads: Sequence[tuple[MemberInfo, onnx.ModelProto]], *, method: str, stacking: Stacking | None,
                  classes: int) -> onnx.ModelProto:
    """One graph of the members' head graphs and the ensemble rule.

    Args:
        heads: Each member (name, inputs, output, weight, temperature) with its head graph.
        method: The ensemble rule (``EnsembleMethod`` value).
        stacking: The ``stacking`` rule's model (else None).
        classes: C, the number of labels.

    Returns:
        The merged model: inputs, the features the heads read (one each); outputs, ``probabilities``
        (B, C) then ``probabilities.<member>`` (B, C) per member.
    """
    rule = effective_method(method, stacking, len(heads))
    weights = np.ones(len(heads)) if rule is EnsembleMethod.SOFT_VOTE else np.array([m.weight for m, _ in heads])
    prefixed = [onnx.compose.add_prefix(g, f"{m.name}/", rename_inputs=False) for m, g in heads]
    nodes, inits, inputs = [], [], {}
    for (member, _), model in zip(heads, prefixed):
        nodes += model.graph.node
        inits += model.graph.initializer
        inputs.update({i.name: i for i in model.graph.input if i.name not in inputs})
        member_nodes, member_inits = _member_probs(model, member)
        nodes, inits = nodes + member_nodes, inits + member_inits
    rule_nodes, rule_inits = _ONNX_RULES[rule]([member_output(m.name) for m, _ in heads], weights / weights.sum(),
                                               stacking, classes)
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", classes])
               for n in (ENSEMBLE_OUTPUT, *(member_output(m.name) for m, _ in heads))]
    graph = helper.make_graph(nodes + rule_nodes, "mmedge_heads", list(inputs.values()), outputs, inits + rule_inits,
                              value_info=[v for m in prefixed for v in m.graph.value_info])
    opsets: dict[str, int] = {}
    for m in prefixed:
        for o in m.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                               producer_name="mmedge.export.heads_graph")
    merged.ir_version = max(m.ir_version for m in prefixed)
    merged.functions.extend(f for m in prefixed for f in m.functions)
    onnx.checker.check_model(merged)
    return merged


def _separate(manifest: Manifest, work: Path, precision: str) -> Callable[[Arrays], Arrays]:
    """The reference: each head graph in ONNX Runtime, then the runtime's rule (``ensemble_prediction``)."""
    sessions = [(m, create_session(work / str(m.graphs[precision].file),
                                   disabled_optimizers=m.graphs[precision].ort_disabled_optimizers))
                for m in manifest.members]
    ens = manifest.ensemble

    def run(case: Arrays) -> Arrays:
        logits = {m.name: s.run([m.output], {n: case[n] for n in m.inputs})[0] for m, s in sessions}
        pred = ensemble_prediction(logits, manifest.members, method=ens.method, labels=manifest.labels,
                                   backend="ort", precision=precision, stacking=ens.stacking_model)
        return {ENSEMBLE_OUTPUT: pred.probabilities,
                **{member_output(n): p for n, p in pred.member_probabilities.items()}}

    return run


def _parity(manifest: Manifest, work: Path, rel: str, precision: str, cases: Sequence[Arrays],
            disabled: Sequence[str]) -> dict[str, Any]:
    """The merged graph against the separate heads + numpy rule on every case (raises ParityError)."""
    reference, sess = _separate(manifest, work, precision), create_session(work / rel, disabled_optimizers=disabled)
    names = [o.name for o in sess.get_outputs()]
    inputs = [i.name for i in sess.get_inputs()]
    results = []
    for case in cases:
        feed = {n: case[n] for n in inputs}
        want = {k: np.asarray(v, dtype=np.float64) for k, v in reference(case).items()}
        results += compare_outputs(rel, want, dict(zip(names, sess.run(names, feed))), case_name(feed))
    report = ParityReport(graph=rel, atol=MERGED_ATOL, results=results)
    worst = max(results, key=lambda r: r.max_abs_diff, default=None)
    if worst is not None and not worst.max_abs_diff <= MERGED_ATOL:
        raise ParityError(f"{rel} ({precision}): output {worst.output!r} differs from the separate heads plus the "
                          f"runtime's rule by {worst.max_abs_diff:.3g} (> {MERGED_ATOL:g}) on case {worst.case}; "
                          "the merged graph is wrong: report it with the bundle's recipe")
    return {**_summary(report.to_dict()), "reference": "separate head graphs + mmedge.runtime.ensemble"}


def _usable(manifest: Manifest, precision: str) -> bool:
    return manifest.precisions.get(precision) == "ok" and all(
        precision in m.graphs and m.graphs[precision].status == "ok" for m in manifest.members)


def _merged_entry(manifest: Manifest, work: Path, precision: str, cases: Sequence[Arrays]) -> GraphEntry:
    ens, members = manifest.ensemble, manifest.members
    rel = f"ensemble/heads.{precision}.onnx"
    heads = [(m, onnx.load(str(work / str(m.graphs[precision].file)))) for m in members]
    merged = compose_heads(heads, method=ens.method, stacking=ens.stacking_model, classes=len(manifest.labels))
    (work / rel).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(merged, str(work / rel))
    disabled = tuple(dict.fromkeys(o for m in members for o in m.graphs[precision].ort_disabled_optimizers))
    parity = _parity(manifest, work, rel, precision, cases, disabled)
    opset = next((o.version for o in merged.opset_import if o.domain in ("", "ai.onnx")), None)
    return GraphEntry(file=rel, exporter="onnx.compose", opset=opset, parity=parity, ort_disabled_optimizers=disabled,
                      quantization={"tool": "onnx.compose + rule",
                                    "composed_from": {m.name: m.graphs[precision].file for m in members},
                                    "rule": effective_method(ens.method, ens.stacking_model, len(members)).value,
                                    "notes": "each head graph as built (its Q/DQ or float16 kept), rule in float32"})


def with_heads_graphs(manifest: Manifest, work: Path, cases: Sequence[Arrays]) -> Manifest:
    """The manifest with the merged heads graph of every usable precision (``ensemble.graphs``), each
    written to ``work`` and checked; precisions whose heads use the very same graphs share one file.

    Args:
        manifest: The manifest as export built it (members' graphs final: after accuracy control and ``mixed``).
        work: The export's work folder (the head graphs are there; the merged ones are written there).
        cases: The parity cases (they hold the heads' input features).

    Raises:
        ParityError: a merged graph that does not reproduce the separate heads within ``MERGED_ATOL``.
    """
    graphs: dict[str, GraphEntry] = {}
    made: dict[tuple[str, ...], GraphEntry] = {}
    for precision in (p for p in manifest.precisions if _usable(manifest, p)):
        key = tuple(str(m.graphs[precision].file) for m in manifest.members)
        if key not in made:
            made[key] = _merged_entry(manifest, work, precision, cases)
            log(f"  merged heads graph ({precision}): max diff {made[key].parity['max_abs_diff']:.2g} vs the "
                f"separate heads")
        graphs[precision] = made[key]
    if not graphs:
        return manifest
    return dataclasses.replace(manifest, ensemble=dataclasses.replace(manifest.ensemble, graphs=graphs))
