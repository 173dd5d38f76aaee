"""``mixed``: per component, the fastest graph whose ensemble accuracy stays within ``max_drop``.

After every precision is built and assessed, each component's CPU graphs (those of the
precisions whose record is a ``mixed_candidate``: fp32, int8, fp16 and any registered later)
are timed side by side on the batch-1 parity cases, interleaved, with the runtime's session
options. ``mixed`` starts from the fastest graph of every component; then accuracy control
(``export.accuracy_control``, the same algorithm as every precision's accuracy revert) puts
components back on fp32 until the ensemble is within ``max_drop`` points of PyTorch. The
manifest's ``mixed`` entry of each component is the chosen graph's entry (same file: nothing is
duplicated) plus ``chosen`` and the timings; ``metrics.mixed.components`` says which graph each
component uses.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.export.accuracy_control import AccuracyControlReport, Evaluate, control_accuracy
from mmedge.export.components import Component
from mmedge.runtime.manifest import GraphEntry
from mmedge.runtime.precisions import REFERENCE, PrecisionKind, precisions

__all__ = ["MIXED", "mixed_candidates", "component_latencies", "fastest", "choose_mixed"]

MIXED = "mixed"


def mixed_candidates() -> tuple[str, ...]:
    """The precisions ``mixed`` may pick: fp32 and every record marked ``mixed_candidate``."""
    return tuple(p.name for p in precisions(kind=PrecisionKind.BUILT) if p.mixed_candidate or p.name == REFERENCE)


def _candidates(comp: Component) -> dict[str, GraphEntry]:
    """precision -> graph entry, one precision per distinct file (a graph kept in fp32 is fp32)."""
    out: dict[str, GraphEntry] = {}
    for precision in mixed_candidates():
        entry = comp.graphs.get(precision)
        if entry is not None and entry.status == "ok" and entry.file not in {e.file for e in out.values()}:
            out[precision] = entry
    return out


def component_latencies(comps: Sequence[Component], work: Path, cases: Sequence[Mapping[str, np.ndarray]], *,
                        threads: int | None, iters: int = 40, warmup: int = 5) -> dict[str, dict[str, float]]:
    """Median batch-1 latency (ms per case) of each candidate graph of each component, timed interleaved.

    Args:
        comps: The components, their graphs built.
        work: The folder holding the graphs.
        cases: Parity cases (every component's inputs); those of batch 1 are used.
        threads: ONNX Runtime intra-op threads (None: all cores).
    """
    from mmedge.runtime.backends.ort import create_session
    from mmedge.runtime.timing import run_interleaved

    ones = [c for c in cases if next(iter(c.values())).shape[0] == 1] or list(cases[:1])
    out: dict[str, dict[str, float]] = {}
    for comp in comps:
        fns = {}
        for precision, entry in _candidates(comp).items():
            session = create_session(work / str(entry.file), threads=threads,
                                     disabled_optimizers=entry.ort_disabled_optimizers)
            names = [i.name for i in session.get_inputs()]
            feeds = [{n: case[n] for n in names} for case in ones]
            fns[precision] = lambda s=session, f=feeds: [s.run(None, feed) for feed in f]
        samples = run_interleaved(fns, iters=iters, warmup=warmup)
        out[comp.key] = {p: float(np.median(v)) / len(ones) for p, v in samples.items()}  # per case
    return out


def fastest(latencies: Mapping[str, float]) -> str:
    """The precision with the lowest latency (fp32 on a tie)."""
    return min(latencies, key=lambda p: (latencies[p], p != REFERENCE))


def _apply(comp: Component, precision: str, chosen: str, latencies: Mapping[str, float]) -> None:
    comp.graphs[precision] = replace(comp.graphs[chosen], parity=None, chosen=chosen,
                                     latency_ms_batch1={p: round(v, 4) for p, v in latencies.items()})


def choose_mixed(comps: Sequence[Component], latencies: Mapping[str, Mapping[str, float]], evaluate: Evaluate,
                 *, max_drop: float, precision: str = MIXED) -> tuple[AccuracyControlReport, dict[str, str]]:
    """Picks each component's graph for ``mixed`` and writes the ``mixed`` entries into ``comps``.

    Args:
        comps: The components (their ``graphs`` assessed).
        latencies: ``component_latencies``.
        evaluate: Evaluates the current ``mixed`` entries: ``(result, drop_points)``; the caller
            rewrites the candidate bundle first.
        max_drop: Largest accepted drop, in points.
        precision: The name of the entries written (``mixed``).

    Returns:
        (accuracy control's report, component -> chosen precision).
    """
    choice = {c.key: fastest(latencies[c.key]) for c in comps}
    for comp in comps:
        _apply(comp, precision, choice[comp.key], latencies[comp.key])

    def revert(comp: Component) -> None:
        choice[comp.key] = REFERENCE
        _apply(comp, precision, REFERENCE, latencies[comp.key])

    report = control_accuracy(comps, precision, evaluate=evaluate, revert=revert, max_drop=max_drop)
    return report, dict(choice)
