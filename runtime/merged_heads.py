"""The merged heads graph: every member head and the ensemble rule as one graph per precision.

Export composes the member heads' own graphs of a precision (``mixed``: the ones it chose, each
with its Q/DQ as built) and the combination rule of ``mmedge.runtime.ensemble`` as ONNX ops
(``mmedge.export.heads_graph``), and records it in ``manifest.ensemble.graphs``. Its inputs are the
encoder outputs the heads read; its outputs are the ensemble probabilities (``probabilities``) and
each member's calibrated ones (``probabilities.<member>``). A ``Session`` that runs every member
runs it as one runner (component ``heads``) instead of one runner per head plus the numpy rule;
a Session of some members (``members=``), a bundle without the graph, or a call that leaves an
optional modality out runs the separate heads as before.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.errors import BundleError
from mmedge.runtime.backends.base import BaseRunner
from mmedge.runtime.bundle import Bundle, MemberInfo
from mmedge.runtime.ensemble import prediction_of

__all__ = ["HEADS", "ENSEMBLE_OUTPUT", "member_output", "has_merged", "head_components", "member_head",
           "check_merged", "merged_prediction", "prediction_from_outputs"]

HEADS = "heads"  # the merged graph's component name (``Bundle.graph_entry(HEADS, precision)``)
ENSEMBLE_OUTPUT = "probabilities"
_FIX = "re-export the bundle"


def member_output(member: str) -> str:
    """The merged graph's output of one member's calibrated probabilities."""
    return f"{ENSEMBLE_OUTPUT}.{member}"


def has_merged(bundle: Bundle, precision: str) -> bool:
    """Whether the bundle has a usable merged heads graph at ``precision``."""
    graphs = bundle.manifest.ensemble.graphs or {}
    return precision in graphs and graphs[precision].status == "ok"


def head_components(session: Any) -> list[str]:
    """The head components a ``Session`` loads when it opens: the merged graph when it runs every member
    of a bundle that has one at its precision, else one graph per member head. With the merged graph, the
    members' own heads, which run only for calls that leave an optional modality out, are loaded at the
    first such call (``member_head``): a Session that always gets every modality never loads them (each
    is a session of its own: the reference int8 bundle's contrastive head takes 13-20 ms and 2.2 MiB,
    ``benchmarks/startup.py``'s breakdown)."""
    bundle, precision, members = session.bundle, session.precision, session._members
    if tuple(members) != tuple(bundle.members) or not has_merged(bundle, precision):
        return [f"head.{m.name}" for m in members]
    return [HEADS]


def member_head(session: Any, member: MemberInfo) -> BaseRunner:
    """``member``'s own head runner; one ``head_components`` left for later is loaded (on the Session's
    backend and placement, with its strictness) and checked against the manifest now, once (thread-safe).

    Raises:
        BundleError: the head's graph does not match the manifest, or cannot be loaded.
        BackendUnavailable: it fell back to another backend in a strict Session.
    """
    runner = session._runners.get(f"head.{member.name}")
    return runner if runner is not None else _load_head(session, member)


def _load_head(session: Any, member: MemberInfo) -> BaseRunner:
    """``member_head``'s first call for a deferred head: loads and checks it under the Session's lock."""
    from mmedge.runtime.backends import GraphRef
    from mmedge.runtime.backends.fallback import honest_choice
    from mmedge.runtime.backends.placement import open_placed
    from mmedge.runtime.graph_checks import check_graphs

    component = f"head.{member.name}"
    with session._load_lock:
        if component not in session._runners:
            graph = GraphRef.from_bundle(session.bundle, component, session.precision)
            runners, _ = open_placed(session._choice, (graph,), session._settings)
            try:
                check_graphs(session.bundle, runners, (member,), {})
                session._choice = honest_choice(session._choice, runners, strict=session._strict)
            except BaseException:
                runners[component].deactivate()
                raise
            session._runners = {**session._runners, **runners}  # a new dict: other threads may be reading the old
    return session._runners[component]


def check_merged(session: Any) -> tuple[MemberInfo, ...]:
    """Checks a ``Session``'s merged graph (when loaded) against the manifest; returns the members whose
    own head graphs are loaded (for ``graph_checks.check_graphs``).

    Raises:
        BundleError: inputs other than the members' features, or a missing output.
    """
    runners, members = session._runners, session._members
    runner = runners.get(HEADS)
    if runner is not None:
        wanted = {n for m in members for n in m.inputs}
        if set(runner.input_names) != wanted:
            raise BundleError(f"{HEADS}: the members read {sorted(wanted)}, the merged graph takes "
                              f"{sorted(runner.input_names)}; {_FIX}")
        missing = [n for n in (ENSEMBLE_OUTPUT, *map(member_output, (m.name for m in members)))
                   if n not in runner.output_names]
        if missing:
            raise BundleError(f"{HEADS}: the merged graph lacks outputs {missing}; {_FIX}")
    return tuple(m for m in members if f"head.{m.name}" in runners)


def merged_prediction(session: Any, plan: Any, feats: Mapping[str, np.ndarray], timings: dict[str, float]) -> Any:
    """The ``Prediction`` of the merged graph, or None when the Session did not load it or the call
    runs only some members (then the separate heads and the numpy rule run).

    Raises:
        BundleError: probabilities of the wrong shape, or NaN/Inf on valid inputs.
    """
    runner = session._runners.get(HEADS)
    if runner is None or tuple(plan.members) != tuple(session.bundle.members):
        return None
    start = time.perf_counter()
    out = runner.infer({n: feats[n] for n in runner.input_names})
    timings[HEADS] = (time.perf_counter() - start) * 1000.0
    batch, classes = len(feats[runner.input_names[0]]), len(session.bundle.labels)
    names = [ENSEMBLE_OUTPUT, *(member_output(m.name) for m in plan.members)]
    for name in names:
        if out[name].shape != (batch, classes) or not np.isfinite(out[name]).all():
            raise BundleError(f"{HEADS}: output {name!r} has shape {list(out[name].shape)} (expected [{batch}, "
                              f"{classes}]) or non-finite values; {_FIX}, or run another precision")
    return prediction_from_outputs(out, [m.name for m in plan.members], labels=session.bundle.labels,
                                   backend=session.backend, precision=session.precision, skipped=plan.skipped,
                                   note=plan.note, timings=timings)


def prediction_from_outputs(out: Mapping[str, np.ndarray], members: Sequence[str], *, labels: Sequence[str],
                            backend: str, precision: str, skipped: Sequence[str] = (), note: str = "",
                            timings: dict[str, float] | None = None) -> Any:
    """The ``Prediction`` of the merged graph's outputs ``out`` (``probabilities`` and each of ``members``'
    ``probabilities.<member>``): a Session's, or the combine step's of an ``mmedge triton`` repository."""
    member_probs = {m: np.asarray(out[member_output(m)], dtype=np.float32) for m in members}
    return prediction_of(np.asarray(out[ENSEMBLE_OUTPUT], dtype=np.float32), member_probs, labels=labels,
                         backend=backend, precision=precision, skipped=skipped, note=note, timings=timings)
