"""Placement: each graph of a ``mixed`` bundle on the CPU backend export timed it fastest on.

Export's ``mixed`` (``mmedge.export.mixed_precision``) times each component's graphs on ONNX
Runtime and on the other CPU backends export checks graphs on (OpenVINO, when it is installed),
and records the winner's backend in the graph's entry (``GraphEntry.backend``; None: ONNX Runtime).
When a Session's ``auto`` resolves to ``ort`` (a CPU machine), each graph whose entry names another
backend runs there if that backend can run here and takes the graph (``BaseLoader.missing``:
OpenVINO on x86, graphs export verified on it); otherwise it stays on ``ort`` and the reason says
why. A GPU backend chosen by ``auto`` runs every graph (the timing was the CPU's), and a backend
asked for by name is never overridden: ``backend="ort"`` runs every graph on ONNX Runtime.
"""
from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Sequence

from mmedge.runtime.backends.base import BaseRunner, GraphRef, LoadSettings
from mmedge.runtime.backends.table import BACKENDS

if TYPE_CHECKING:  # pragma: no cover
    from mmedge.runtime.backends import BackendChoice

__all__ = ["PLACED_ON", "placements", "placement_problem", "open_placed"]

PLACED_ON = "ort"  # the backend whose graphs mixed may place elsewhere: the one it timed the others against


def placements(chosen: str, graphs: Sequence[GraphRef], settings: LoadSettings) -> tuple[dict[str, str], list[str]]:
    """Where each graph recorded on another backend runs, and why.

    Args:
        chosen: The Session's backend.
        graphs: Its graphs (their entries' ``backend``).
        settings: Its settings (``auto``: chosen by ``auto``).

    Returns:
        (component -> backend, for the graphs placed on another backend than ``chosen``; one note per
        graph whose entry names another backend, placed or not).
    """
    if not settings.auto or chosen != PLACED_ON:
        return {}, []
    placed: dict[str, str] = {}
    notes: list[str] = []
    for graph in graphs:
        want = graph.entry.backend
        if want in (None, chosen):
            continue
        problem = placement_problem(want, graph, settings)
        if problem:
            notes.append(f"{graph.component} stays on {chosen!r}, not {want!r} as export's mixed timing chose "
                         f"({problem})")
        else:
            placed[graph.component] = want
            notes.append(f"{graph.component} on {want!r} (export's mixed timed it fastest there)")
    return placed, notes


def placement_problem(name: str, graph: GraphRef, settings: LoadSettings) -> str | None:
    """Why ``graph`` cannot run on backend ``name`` here under ``auto`` (None: it can): what the backend
    needs for it (``BaseLoader.missing``: OpenVINO on x86, graphs verified at export), then whether it
    is available. Export's ``mixed`` times a backend's candidates only where this is None."""
    from mmedge.runtime.backends import _skip_reason  # auto's own rule, for one graph

    return _skip_reason(BACKENDS[name], [graph], settings) if name in BACKENDS else \
        f"no backend {name!r} is registered here"


def open_placed(choice: "BackendChoice", graphs: Sequence[GraphRef], settings: LoadSettings
                ) -> tuple[dict[str, BaseRunner], "BackendChoice"]:
    """Activated runners for ``graphs`` (each on its placement, the rest on ``choice``'s backend), all
    deactivated again if one fails; and ``choice`` with the placements and their notes. Graphs whose
    placement fails to load (any error of that backend) run on ``choice``'s backend, and the reason
    says so. The runners are in ``graphs``' order.

    Args:
        choice: The ``BackendChoice`` made by ``resolve_backend``.
        graphs: The Session's graphs.
        settings: The Session's settings.
    """
    from mmedge.runtime.backends import open_runners

    placed, notes = placements(choice.name, graphs, settings)
    groups: dict[str, list[GraphRef]] = {}
    for graph in graphs:
        groups.setdefault(placed.get(graph.component, choice.name), []).append(graph)
    runners: dict[str, BaseRunner] = {}
    try:
        for name, group in groups.items():
            try:
                runners.update(open_runners(name, group, settings))
            except Exception as exc:  # noqa: BLE001 - the placed backend's own errors (a broken install too)
                if name == choice.name:
                    raise
                notes.append(f"{', '.join(g.component for g in group)} back on {choice.name!r}: {name!r} failed to "
                             f"load {'them' if len(group) > 1 else 'it'} ({' '.join(str(exc).split())[:200]})")
                runners.update(open_runners(choice.name, group, settings))
                placed = {c: b for c, b in placed.items() if b != name}
    except BaseException:
        for runner in runners.values():
            runner.deactivate()
        raise
    reason = choice.reason + "".join(f"; {n}" for n in notes)
    ordered = {g.component: runners[g.component] for g in graphs}
    return ordered, replace(choice, reason=reason, placed=MappingProxyType(placed))
