"""Every graph checked on the other backends the runtime's ``auto`` may pick (OpenVINO on the CPU,
when it is installed where the bundle is exported).

Export verifies its graphs on ONNX Runtime (parity, fidelity, accuracy). A backend whose loader
sets ``verified_at_export`` (``mmedge.runtime.backends.base.BaseLoader``) runs the same graphs
through the runtime's own loader and runner on the parity cases; its outputs are compared with the
fp32 graph on ONNX Runtime, at the graph's precision's ``min_cosine`` (the bar ONNX Runtime's graph
passed). The result goes into ``GraphEntry.backends[<backend name>]``; ``auto`` takes that backend
only for graphs whose check is ok. A backend that fails to compile or run a graph records the error
instead of failing the export: the graph still ships, on ONNX Runtime.
"""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from mmedge.export.parity import ModuleFn, case_name, compare_outputs, mask_sequences, onnx_fn
from mmedge.progress import log
from mmedge.runtime.backends import backend_order
from mmedge.runtime.backends.base import GraphRef, LoadSettings
from mmedge.runtime.backends.table import Backend
from mmedge.runtime.int8_kernels import SaturatingInt8Warning
from mmedge.runtime.manifest import GraphEntry, Manifest
from mmedge.runtime.merged_heads import HEADS
from mmedge.runtime.precisions import REFERENCE, get_precision

if TYPE_CHECKING:  # pragma: no cover
    from mmedge.export.components import Component

__all__ = ["checked_backends", "check_graph", "check_entries", "check_components", "check_merged_heads"]

Arrays = dict[str, np.ndarray]


def checked_backends() -> tuple[Backend, ...]:
    """The backends export checks graphs on here: ``verified_at_export`` and available."""
    return tuple(b for b in backend_order() if b.loader.verified_at_export and b.availability() is None)


def check_graph(backend: Backend, graph: GraphRef, precision: str, reference: ModuleFn,
                cases: Sequence[Mapping[str, np.ndarray]], *, threads: int | None = None) -> dict[str, Any]:
    """Runs ``graph`` on ``backend`` over ``cases`` and compares it with ``reference``.

    Args:
        backend: A backend table row.
        graph: The graph (its entry's precision facts are what the runtime's loader reads).
        precision: The precision of the graph's file (its record's ``min_cosine`` is the bar).
        reference: What the graph must agree with on ONNX Runtime (a component's fp32 graph; for the
            merged heads graph, itself: export checked it against the separate heads).
        cases: Inputs (the export's parity cases, this graph's inputs only).
        threads: CPU threads for the backend.

    Returns:
        ``{"ok", "min_cosine", "min_cosine_required", "max_abs_diff", "cases"}``, or ``{"ok": False,
        "error"}`` when the backend cannot compile or run the graph.
    """
    required = get_precision(precision).min_cosine
    try:
        with tempfile.TemporaryDirectory(prefix="mmedge-check-") as engines, warnings.catch_warnings():
            warnings.simplefilter("ignore", SaturatingInt8Warning)  # the check records what the backend computes
            settings = LoadSettings(graph.path.parent, precision, Path(engines), threads)
            with backend.runner(backend.loader.for_session(settings)(graph)) as runner:
                rows = [r for case in cases for r in compare_outputs(
                    graph.path.name, mask_sequences(reference(case)), mask_sequences(runner.infer(dict(case))),
                    case_name(case))]
    except Exception as exc:  # noqa: BLE001 - a backend's own errors: recorded, the graph stays on ONNX Runtime
        return {"ok": False, "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:400]}
    worst = min((r.min_cosine for r in rows), default=1.0)
    return {"ok": bool(worst >= required), "min_cosine": worst, "min_cosine_required": required,
            "max_abs_diff": max((r.max_abs_diff for r in rows), default=0.0), "cases": len(cases)}


def check_entries(graphs: Mapping[str, GraphEntry], component: str, work: Path, reference: Callable[[str], ModuleFn],
                  cases: Sequence[Arrays], *, threads: int | None = None) -> dict[str, GraphEntry]:
    """``graphs`` (precision -> entry, files under ``work``) with each file's check on every one of
    ``checked_backends()`` recorded in ``GraphEntry.backends`` (each file checked once).

    Args:
        graphs: One component's graph entries.
        component: Its name (``encoder.image``, ``head.concat``, ``heads``).
        work: The export's work folder.
        reference: Precision of a file -> the function its outputs are compared with.
        cases: The parity cases (each graph gets its own inputs from them).
        threads: CPU threads for the backends.
    """
    backends, done, out = checked_backends(), {}, dict(graphs)
    for precision, entry in graphs.items() if backends else ():
        if entry.file is None:
            continue
        if entry.file not in done:
            own = next((p for p, e in graphs.items() if e.file == entry.file and e.built), precision)
            path = work / entry.file
            ref = GraphRef(component, path, entry, read=path.read_bytes)  # bytes, as a Session loads it
            picked = _inputs_of(work / entry.file, cases)
            done[entry.file] = {b.name: check_graph(b, ref, own, reference(own), picked, threads=threads)
                                for b in backends}
            _log_failures(component, entry.file, done[entry.file])
        out[precision] = replace(entry, backends={**(entry.backends or {}), **done[entry.file]})
    return out


def check_components(comps: Sequence["Component"], work: Path, cases: Sequence[Arrays], *,
                     threads: int | None = None) -> None:
    """Checks every graph of every component against its fp32 graph on ONNX Runtime (``check_entries``)."""
    for comp in comps if checked_backends() else ():
        fp32 = onnx_fn(work / comp.rel(REFERENCE))
        comp.graphs = check_entries(comp.graphs, comp.key, work, lambda _: fp32, cases, threads=threads)


def check_merged_heads(manifest: Manifest, work: Path, cases: Sequence[Arrays], *,
                       threads: int | None = None) -> Manifest:
    """Checks each merged heads graph (``ensemble.graphs``) against itself on ONNX Runtime, where export
    checked it against the separate heads (``export.heads_graph``)."""
    graphs = manifest.ensemble.graphs
    if not graphs or not checked_backends():
        return manifest
    files = {p: e.file for p, e in graphs.items()}
    checked = check_entries(graphs, HEADS, work, lambda p: onnx_fn(work / str(files[p])), cases, threads=threads)
    return replace(manifest, ensemble=replace(manifest.ensemble, graphs=checked))


def _inputs_of(path: Path, cases: Sequence[Arrays]) -> list[Arrays]:
    """Each case cut to the graph's own inputs."""
    names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    return [{n: c[n] for n in names} for c in cases]


def _log_failures(key: str, file: str, results: Mapping[str, Mapping[str, Any]]) -> None:
    for name, r in results.items():
        if not r["ok"]:
            why = r.get("error") or f"min cosine {r['min_cosine']:.4f} < {r['min_cosine_required']}"
            log(f"  {key}: {file} not verified on {name} ({why[:200]}); auto keeps it on ONNX Runtime")
