"""One exportable component (an encoder or a member's fusion head) and its precisions.

Each component is exported to fp32 ONNX (parity against PyTorch enforced), then turned
into each reduced precision by its policy (``mmedge.export.quantization``), from the fp32
graph or from the graph its precision record ``derives_from``; its fidelity against fp32 is
measured and recorded. Two ways a graph entry can point at another precision's graph:

- build fallback (``build_fallback``): the graph could not be built; the entry records the
  failure and uses the first built precision of the record's ``build_fallback`` (else fp32);
- accuracy revert (``keep_fp32``): the graph was built, but the ensemble lost too much
  accuracy with it (``export.accuracy_control``); the entry uses the fp32 graph.

(The runtime's backend fallback, when a backend cannot run a graph, is a third thing:
``mmedge.runtime.backends.fallback``.)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmedge.export.onnx_export import GraphInfo, export_encoder, export_head, head_forward
from mmedge.export.parity import check_parity, check_reduced_precision, mask_sequences, require_parity, torch_fn
from mmedge.errors import CalibrationError, ExportError
from mmedge.export.diagnose import graph_failure
from mmedge.export.quantization import NothingToQuantize, policy
from mmedge.export.quantization.graph_traits import graph_traits
from mmedge.progress import log
from mmedge.runtime.manifest import GraphEntry
from mmedge.runtime.precisions import REFERENCE, get_precision

__all__ = ["Component", "export_fp32", "make_reduced", "build_fallback", "keep_fp32"]

Arrays = dict[str, np.ndarray]


@dataclass
class Component:
    """An encoder or a fusion head, with where its graphs go in the bundle.

    Attributes:
        key: "encoder.image", "head.concat", ...
        stem: Bundle path without suffix, e.g. "encoders/image".
        module: The torch module (an ``Encoder`` or a ``FusionHead``).
        kind: "encoder" or "head".
        model_type: NNCF scheme: "cnn", "transformer" or "head"; empty for an encoder until its
            fp32 graph is exported and read (``graph_traits``).
    """

    key: str
    stem: str
    module: Any
    kind: str
    model_type: str = ""
    info: GraphInfo | None = None
    graphs: dict[str, GraphEntry] = field(default_factory=dict)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.module.input_names) if self.kind == "encoder" else tuple(self.module.input_names())

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.module.output_names()) if self.kind == "encoder" else ("logits",)

    def rel(self, precision: str) -> str:
        """Bundle-relative path of this component's graph at ``precision``."""
        return f"{self.stem}.{precision}.onnx"

    def torch_fn(self) -> Callable[[Mapping[str, np.ndarray]], Arrays]:
        """PyTorch reference: inputs dict -> outputs dict."""
        module = self.module if self.kind == "encoder" else head_forward(self.module)
        return torch_fn(module, self.input_names, self.output_names)


def export_fp32(comp: Component, work: Path, example: Arrays, cases: Sequence[Arrays], *, atol: float) -> None:
    """Exports the fp32 graph and enforces parity with PyTorch on ``cases`` (raises ParityError)."""
    path = work / comp.rel("fp32")
    path.parent.mkdir(parents=True, exist_ok=True)
    export = export_encoder if comp.kind == "encoder" else export_head
    key = "example_inputs" if comp.kind == "encoder" else "example_feats"
    comp.info = export(comp.module, path, **{key: {n: example[n] for n in comp.input_names}})
    reference = comp.torch_fn()
    report = require_parity(check_parity(lambda case: mask_sequences(reference(case)), path,
                                         [_pick(c, comp.input_names) for c in cases], atol=atol, mask_padding=True))
    traits = graph_traits(path)
    comp.model_type = comp.model_type or traits.model_type  # encoders: read from the graph
    comp.graphs["fp32"] = GraphEntry(file=comp.rel("fp32"), exporter=comp.info.exporter, opset=comp.info.opset,
                                     notes=tuple(comp.info.notes), parity=_summary(report.to_dict()),
                                     graph={**traits.to_dict(), "model_type": comp.model_type},
                                     ort_disabled_optimizers=get_precision(REFERENCE).ort_disabled_optimizers)


def make_reduced(comp: Component, precision: str, work: Path, calib: Sequence[Arrays], cases: Sequence[Arrays]) -> None:
    """Builds the graph of ``precision`` with its policy and records its fidelity against fp32.

    A graph that cannot be built or run is not fatal: the failure is recorded with the module
    path and op it names, and the component uses a precision that works (``build_fallback``).
    """
    try:
        _make_reduced(comp, precision, work, calib, cases)
    except CalibrationError:
        raise  # the user's data, not the graph: say so
    except NothingToQuantize as why:
        keep_fp32(comp, precision, str(why))
        log(f"  {comp.key}: {precision} keeps the fp32 graph ({why})")
    except Exception as err:  # noqa: BLE001 - NNCF, the converters and ONNX Runtime raise their own types
        build_fallback(comp, precision, graph_failure(work / comp.rel(REFERENCE), err))


def build_fallback(comp: Component, precision: str, failure: Mapping[str, str]) -> str:
    """Points ``precision`` of ``comp`` at the first built graph of its record's ``build_fallback``
    (else fp32) and records why; returns the precision used."""
    target = next((p for p in get_precision(precision).build_fallback if _built(comp.graphs.get(p))), REFERENCE)
    where = f"module {failure['module']!r} ({failure.get('class') or '?'}), op {failure['op']}" if "op" in failure else \
        "no node named in the error"
    comp.graphs[precision] = replace(comp.graphs[target], parity=None, fidelity=None, warnings=None,
                                     build_fallback=target, failed={**failure, "precision": precision},
                                     kept_float=f"{precision} failed at {where}" if target == REFERENCE else None)
    log(f"  {comp.key}: {precision} failed at {where} ({failure['error'][:160]}); using its {target} graph")
    return target


def _make_reduced(comp: Component, precision: str, work: Path, calib: Sequence[Arrays], cases: Sequence[Arrays]) -> None:
    record, builder = get_precision(precision), policy(precision)
    source = record.derives_from or REFERENCE
    if not _built(comp.graphs.get(source)):
        used = comp.graphs[source].build_fallback if source in comp.graphs else None
        raise ExportError(f"{precision} converts the {source} graph of {comp.key}, which "
                          + (f"could not be built (its entry uses the {used} graph)" if used else "was not built"))
    dst = work / comp.rel(precision)
    batches = [_pick(c, comp.input_names) for c in calib] if builder.needs_calibration else []
    how = builder.build(work / comp.rel(source), dst, calib=batches, model_type=comp.model_type)
    if source != REFERENCE:
        how = _derived(comp.graphs[source].quantization or {}, how, source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fidelity = check_reduced_precision(work / comp.rel(REFERENCE), dst, [_pick(c, comp.input_names) for c in cases],
                                           precision=precision)
    comp.graphs[precision] = GraphEntry(file=comp.rel(precision), quantization=how, fidelity=_summary(fidelity),
                                        warnings=tuple(str(w.message) for w in caught),
                                        ort_disabled_optimizers=record.ort_disabled_optimizers)


def _built(entry: GraphEntry | None) -> bool:
    """Whether a graph entry is a graph of its own precision (not a build fallback or a revert)."""
    return entry is not None and entry.built


def _derived(source: Mapping[str, Any], how: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The description of a graph converted from the ``name`` graph: that graph's, then this step's."""
    notes = "; then ".join(n for n in (source.get("notes"), how.get("notes")) if n)
    return {**source, **how, "derived_from": name, **({"notes": notes} if notes else {})}


def keep_fp32(comp: Component, precision: str, reason: str) -> None:
    """Makes ``precision`` of this component point at its fp32 graph, saying why (``kept_float``): an accuracy
    revert (the ensemble lost too much with it), or a policy with nothing to quantize in it."""
    comp.graphs[precision] = replace(comp.graphs[REFERENCE], kept_float=reason, parity=None)


def _pick(case: Mapping[str, np.ndarray], names: Sequence[str]) -> Arrays:
    return {n: case[n] for n in names}


def _summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """Worst-case figures per output over all cases, plus the case list (manifest-sized)."""
    out = {k: v for k, v in report.items() if k != "cases"}
    worst: dict[str, dict[str, float]] = {}
    for r in report.get("cases", []):
        w = worst.setdefault(r["output"], {"max_abs_diff": 0.0, "min_cosine": 1.0})
        w["max_abs_diff"] = max(w["max_abs_diff"], r["max_abs_diff"])
        w["min_cosine"] = min(w["min_cosine"], r["min_cosine"])
    out["outputs"] = worst
    out["cases"] = sorted({r["case"] for r in report.get("cases", [])})
    return out
