"""``mixed``: per component, the fastest graph and CPU backend whose ensemble accuracy stays within ``max_drop``.

After every precision is built and assessed, each component's CPU graphs (those of the
precisions whose record is a ``mixed_candidate``: fp32, int8, fp16 and any registered later)
are timed side by side, interleaved, per row on the parity cases of batch 1 and of the largest
batch: on ONNX Runtime with the runtime's session options, and on every other backend export
checks graphs on (``export.backend_check``: OpenVINO on the CPU, when it is installed) for the
graphs that passed that check, through the runtime's own loader and runner. A candidate is named
``<precision>`` on ONNX Runtime and ``<precision>@<backend>`` elsewhere (``candidate_key``).

``mixed`` starts from the fastest candidate of every component (``fastest``: the least worst
slowdown against the fastest at each batch size, so a graph faster at batch 1 but twice as slow
at batch 7 is not taken); then accuracy control (``export.accuracy_control``, the same algorithm
as every precision's accuracy revert) puts components back on their fp32 graph (on the backend
where it was fastest) until the ensemble is within ``max_drop`` points of PyTorch. The manifest's
``mixed`` entry of each component is the chosen graph's entry (same file: nothing is duplicated)
plus ``chosen``, ``backend`` (when not ONNX Runtime) and the timings; ``metrics.mixed.components``
says which candidate each component uses. A Session whose ``auto`` resolves to ``ort`` runs each
graph on the backend its entry names (``runtime.backends.placement``).
"""
from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmedge.export.accuracy_control import AccuracyControlReport, Evaluate, control_accuracy
from mmedge.export.backend_check import checked_backends
from mmedge.export.components import Component
from mmedge.progress import log
from mmedge.runtime.backends import BaseRunner, GraphRef, LoadSettings, open_runners
from mmedge.runtime.backends.placement import PLACED_ON, placement_problem
from mmedge.runtime.encoder_lanes import LanePlan, plan_lanes
from mmedge.runtime.manifest import GraphEntry
from mmedge.runtime.precisions import REFERENCE, PrecisionKind, precisions

__all__ = ["MIXED", "mixed_candidates", "candidate_key", "split_key", "component_latencies", "fastest",
           "choose_mixed"]

MIXED = "mixed"


def mixed_candidates() -> tuple[str, ...]:
    """The precisions ``mixed`` may pick: fp32 and every record marked ``mixed_candidate``."""
    return tuple(p.name for p in precisions(kind=PrecisionKind.BUILT) if p.mixed_candidate or p.name == REFERENCE)


def candidate_key(precision: str, backend: str | None = None) -> str:
    """``<precision>`` on ONNX Runtime, ``<precision>@<backend>`` on another backend."""
    return precision if backend in (None, PLACED_ON) else f"{precision}@{backend}"


def split_key(key: str) -> tuple[str, str | None]:
    """``candidate_key``'s inverse: (precision, backend or None for ONNX Runtime)."""
    precision, _, backend = key.partition("@")
    return precision, backend or None


def _candidates(comp: Component) -> dict[str, GraphEntry]:
    """precision -> graph entry, one precision per distinct file (a graph kept in fp32 is fp32)."""
    out: dict[str, GraphEntry] = {}
    for precision in mixed_candidates():
        entry = comp.graphs.get(precision)
        if entry is not None and entry.status == "ok" and entry.file not in {e.file for e in out.values()}:
            out[precision] = entry
    return out


Latencies = Mapping[str, Mapping[str, float]]  # batch size (a string, as in JSON) -> candidate key -> ms per row


def component_latencies(comps: Sequence[Component], work: Path, cases: Sequence[Mapping[str, np.ndarray]], *,
                        threads: int | None, iters: int = 40, warmup: int = 5
                        ) -> dict[str, dict[str, dict[str, float]]]:
    """Median latency per row of each candidate of each component at the cases' smallest batch (1)
    and largest batch (7), all candidates of a component and batch timed interleaved.

    Args:
        comps: The components, their graphs built (and checked on the other backends).
        work: The folder holding the graphs.
        cases: Parity cases (every component's inputs), at several batch sizes.
        threads: The Session's threads (None: all cores). Each graph is timed on the threads a
            Session gives it on a CPU (``mmedge.runtime.encoder_lanes.plan_lanes``: its share when the
            encoders run at once).

    Returns:
        component -> batch size (``"1"``, ``"7"``) -> ``candidate_key`` -> ms per row.
    """
    from mmedge.runtime.timing import run_interleaved

    plan = plan_lanes(None, threads=threads, encoders=sum(c.kind == "encoder" for c in comps), cpu_backend=True)
    sizes = sorted({int(next(iter(c.values())).shape[0]) for c in cases})
    groups = {b: [c for c in cases if next(iter(c.values())).shape[0] == b] for b in sorted({sizes[0], sizes[-1]})}
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mmedge-mixed-") as engines, ExitStack() as opened:
        for comp in comps:
            runners = _runners(comp, work, plan, Path(engines), opened)
            out[comp.key] = {}
            for batch, group in groups.items():
                samples = run_interleaved({k: _over(r, group) for k, r in runners.items()}, iters=iters, warmup=warmup)
                out[comp.key][str(batch)] = {k: float(np.median(v)) / (len(group) * batch) for k, v in samples.items()}
    return out


def _runners(comp: Component, work: Path, plan: LanePlan, engines: Path, opened: ExitStack
             ) -> dict[str, BaseRunner]:
    """candidate key -> an activated runner (the runtime's own loader and runner, deactivated by ``opened``):
    every candidate graph on ONNX Runtime, and, for an encoder, on each other checked backend where a
    Session's ``auto`` would place it (``placement_problem``). Heads stay on ONNX Runtime: a Session
    runs them as the merged heads graph there. A backend that fails to load a graph loses that candidate."""
    out: dict[str, BaseRunner] = {}
    others = checked_backends() if comp.kind == "encoder" else ()
    for precision, entry in _candidates(comp).items():
        graph = GraphRef(comp.key, work / str(entry.file), entry)
        settings = LoadSettings(work, precision, engines, plan.graph_threads, auto=True, lanes=plan.lanes)
        for name in (PLACED_ON, *(b.name for b in others if placement_problem(b.name, graph, settings) is None)):
            try:
                runner = open_runners(name, [graph], settings)[comp.key]
            except Exception as exc:  # noqa: BLE001 - another backend's own errors: the candidate is dropped
                if name == PLACED_ON:
                    raise
                log(f"  {comp.key}: {entry.file} not timed on {name} ({' '.join(str(exc).split())[:200]})")
                continue
            opened.callback(runner.deactivate)
            out[candidate_key(precision, name)] = runner
    return out


def _over(runner: BaseRunner, cases: Sequence[Mapping[str, np.ndarray]]) -> Callable[[], None]:
    """A function running ``runner`` once on every case, each cut to the graph's own inputs."""
    feeds = [{n: case[n] for n in runner.input_names} for case in cases]

    def run() -> None:
        for feed in feeds:
            runner.infer(feed)
    return run


def fastest(latencies: Latencies | Mapping[str, float]) -> str:
    """The candidate whose worst slowdown against the fastest candidate of each timed batch size is
    least (with batch 1 alone: the fastest at batch 1); then the fastest at batch 1; fp32 on ONNX
    Runtime on a tie. A flat mapping is batch 1's."""
    by_batch = latencies if isinstance(next(iter(latencies.values())), Mapping) else {"1": latencies}
    best = {b: min(v.values()) for b, v in by_batch.items()}
    first = by_batch[min(by_batch, key=int)]

    def score(k: str) -> tuple[float, float, bool]:
        return max(v[k] / best[b] for b, v in by_batch.items()), first[k], k != REFERENCE
    return min(first, key=score)


def _apply(comp: Component, precision: str, key: str, latencies: Latencies) -> None:
    chosen, backend = split_key(key)
    per_row = {b: {k: round(v, 4) for k, v in ms.items()} for b, ms in latencies.items()}
    comp.graphs[precision] = replace(comp.graphs[chosen], parity=None, chosen=chosen, backend=backend,
                                     latency_ms_batch1=per_row[min(per_row, key=int)], latency_ms_per_row=per_row)


def _of_reference(latencies: Latencies) -> Latencies:
    """The candidates that run the fp32 graph (on any backend)."""
    return {b: {k: v for k, v in ms.items() if split_key(k)[0] == REFERENCE} for b, ms in latencies.items()}


def choose_mixed(comps: Sequence[Component], latencies: Mapping[str, Latencies], evaluate: Evaluate,
                 *, max_drop: float, precision: str = MIXED) -> tuple[AccuracyControlReport, dict[str, str]]:
    """Picks each component's graph for ``mixed`` and writes the ``mixed`` entries into ``comps``.

    Args:
        comps: The components (their ``graphs`` assessed).
        latencies: ``component_latencies`` (component -> batch -> candidate -> ms per row).
        evaluate: Evaluates the current ``mixed`` entries: ``(result, drop_points)``; the caller
            rewrites the candidate bundle first.
        max_drop: Largest accepted drop, in points.
        precision: The name of the entries written (``mixed``).

    Returns:
        (accuracy control's report, component -> chosen ``candidate_key``).
    """
    choice = {c.key: fastest(latencies[c.key]) for c in comps}
    for comp in comps:
        _apply(comp, precision, choice[comp.key], latencies[comp.key])

    def revert(comp: Component) -> None:  # to the fp32 graph, on the backend where it is fastest
        choice[comp.key] = fastest(_of_reference(latencies[comp.key]))
        _apply(comp, precision, choice[comp.key], latencies[comp.key])

    report = control_accuracy(comps, precision, evaluate=evaluate, revert=revert, max_drop=max_drop)
    return report, dict(choice)
