"""``mixed``: per component, the fastest graph whose ensemble accuracy stays within ``max_drop``.

After every precision is built and assessed, each component's CPU graphs (fp32, int8, fp16:
the ones ONNX Runtime's CPU kernels run) are timed side by side on the batch-1 parity cases,
interleaved, with the runtime's session options. ``mixed`` starts from the fastest graph of
every component; while the ensemble loses more than ``max_drop`` points against PyTorch (the
runtime on the held-out split, as for every precision), the least faithful component not yet
in fp32 goes back to fp32. The manifest's ``mixed`` entry of each component is the chosen
graph's entry (same file: nothing is duplicated) plus ``chosen`` and the timings; the report's
``metrics.mixed.components`` says which graph each component uses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmedge.export.components import Component
from mmedge.progress import log

__all__ = ["MIXED", "CANDIDATES", "component_latencies", "fastest", "choose_mixed"]

MIXED = "mixed"
CANDIDATES: tuple[str, ...] = ("fp32", "int8", "fp16")  # graphs made for (or runnable by) ONNX Runtime's CPU kernels
Evaluate = Callable[[], tuple[dict[str, Any], float]]  # -> (result, drop in points), on the candidate bundle


def _candidates(comp: Component) -> dict[str, str]:
    """precision -> graph file, one precision per distinct file (a graph kept in fp32 is fp32)."""
    out: dict[str, str] = {}
    for precision in CANDIDATES:
        entry = comp.graphs.get(precision)
        if entry and entry.get("status") == "ok" and entry["file"] not in out.values():
            out[precision] = entry["file"]
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
        for precision, file in _candidates(comp).items():
            session = create_session(work / file, threads=threads)
            names = [i.name for i in session.get_inputs()]
            feeds = [{n: case[n] for n in names} for case in ones]
            fns[precision] = lambda s=session, f=feeds: [s.run(None, feed) for feed in f]
        samples = run_interleaved(fns, iters=iters, warmup=warmup)
        out[comp.key] = {p: float(np.median(v)) / len(ones) for p, v in samples.items()}  # per case
    return out


def fastest(latencies: Mapping[str, float]) -> str:
    """The precision with the lowest latency (fp32 on a tie)."""
    return min(latencies, key=lambda p: (latencies[p], p != "fp32"))


def _apply(comps: Sequence[Component], choice: Mapping[str, str], latencies: Mapping[str, Mapping[str, float]]) -> None:
    for comp in comps:
        entry = {k: v for k, v in comp.graphs[choice[comp.key]].items() if k != "parity"}
        entry.update(chosen=choice[comp.key], latency_ms_batch1={p: round(v, 4) for p, v in latencies[comp.key].items()})
        comp.graphs[MIXED] = entry


def _least_faithful(comps: Sequence[Component], choice: Mapping[str, str]) -> Component | None:
    """The component not in fp32 whose chosen graph has the lowest min cosine vs fp32."""
    reduced = [c for c in comps if choice[c.key] != "fp32"]
    fidelity = lambda c: c.graphs[choice[c.key]].get("fidelity", {}).get("min_cosine", 1.0)  # noqa: E731
    return min(reduced, key=fidelity) if reduced else None


def choose_mixed(comps: Sequence[Component], latencies: Mapping[str, Mapping[str, float]], evaluate: Callable[[], Any],
                 *, max_drop: float) -> tuple[dict[str, Any], float, dict[str, str], list[str]]:
    """Picks each component's graph for ``mixed`` and writes the ``mixed`` entries into ``comps``.

    Args:
        comps: The components (their ``graphs`` assessed).
        latencies: ``component_latencies``.
        evaluate: Evaluates the current ``mixed`` entries: ``(result, drop_points)``; the caller
            rewrites the candidate bundle first.
        max_drop: Largest accepted drop, in points.

    Returns:
        (the last evaluation, its drop, component -> chosen precision, the steps taken).
    """
    choice = {c.key: fastest(latencies[c.key]) for c in comps}
    steps = [f"fastest graphs first: {choice}"]
    while True:
        _apply(comps, choice, latencies)
        result, drop = evaluate()
        worst = _least_faithful(comps, choice) if drop > max_drop else None
        if worst is None:
            return result, drop, dict(choice), steps
        steps.append(f"drop {drop:.2f} > {max_drop} points: {worst.key} back to fp32 (was {choice[worst.key]})")
        log(f"  mixed: {steps[-1]}")
        choice[worst.key] = "fp32"
