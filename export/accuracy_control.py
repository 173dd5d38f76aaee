"""Accuracy control: the one algorithm that reverts components to fp32 until the ensemble is
within its accuracy budget (as NNCF's ``accuracy_control`` is one algorithm with a ranker).

It evaluates the ensemble; while the drop against PyTorch exceeds ``max_drop`` points, the
ranker names the next components to revert (by default: every reduced head at once, as they
are small and cheap in float, then encoders from the least faithful to fp32 on), they are
reverted and the ensemble is evaluated again. The export's accuracy revert of each precision
(``export.accuracy``) and the ``mixed`` selection (``export.mixed_precision``) both run it;
each says what "revert" means for it. It returns a typed ``AccuracyControlReport``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mmedge.export.components import Component
from mmedge.progress import log
from mmedge.runtime.precisions import REFERENCE

__all__ = ["RevertStep", "AccuracyControlReport", "Ranker", "rank_heads_then_least_faithful", "control_accuracy",
           "on_reference", "fidelity"]

Evaluate = Callable[[], tuple[dict[str, Any], float]]  # -> (result, drop in points against PyTorch)
Ranker = Callable[[Sequence[Component], str], list[Component]]  # (reduced components, precision) -> next to revert


@dataclass(frozen=True)
class RevertStep:
    """Components reverted to fp32 in one step, and why.

    Attributes:
        components: Their keys (``head.concat``...).
        was: The precision of each one's graph before (its own, or the one ``mixed`` chose).
        drop: The ensemble's drop before the step, in points.
        max_drop: The budget, in points.
    """

    components: tuple[str, ...]
    was: tuple[str, ...]
    drop: float
    max_drop: float

    def __str__(self) -> str:
        was = ", ".join(dict.fromkeys(self.was))
        return (f"kept {', '.join(self.components)} in {REFERENCE}: drop {self.drop:.2f} > {self.max_drop} points "
                f"(was {was})")


@dataclass(frozen=True)
class AccuracyControlReport:
    """What accuracy control did.

    Attributes:
        result: The last evaluation (the ensemble as it ships).
        drop: Its drop against PyTorch, in points.
        max_drop: The budget, in points.
        steps: The reverts, in order.
        all_reference: Whether every component ended on its fp32 graph.
    """

    result: dict[str, Any]
    drop: float
    max_drop: float
    steps: tuple[RevertStep, ...]
    all_reference: bool

    @property
    def within_budget(self) -> bool:
        """Whether the final drop is within ``max_drop``."""
        return self.drop <= self.max_drop

    def step_texts(self) -> list[str]:
        """One line per step (the manifest's ``metrics.<precision>.accuracy_reverts``)."""
        return [str(s) for s in self.steps]


def on_reference(comp: Component, precision: str) -> bool:
    """Whether ``precision`` of ``comp`` runs its fp32 graph (kept float, reverted, or chosen)."""
    return comp.graphs[precision].file == comp.graphs[REFERENCE].file


def fidelity(comp: Component, precision: str) -> float:
    """The min per-row cosine against fp32 of the graph ``precision`` of ``comp`` uses (1.0 if unmeasured)."""
    return (comp.graphs[precision].fidelity or {}).get("min_cosine", 1.0)


def rank_heads_then_least_faithful(reduced: Sequence[Component], precision: str) -> list[Component]:
    """The next components to revert: every reduced head at once (small, cheap in float), else the
    encoder least faithful to fp32."""
    heads = [c for c in reduced if c.kind == "head"]
    if heads:
        return heads
    return [min(reduced, key=lambda c: fidelity(c, precision))]


def control_accuracy(comps: Sequence[Component], precision: str, *, evaluate: Evaluate,
                     revert: Callable[[Component], None], max_drop: float,
                     ranker: Ranker = rank_heads_then_least_faithful) -> AccuracyControlReport:
    """Reverts components of ``precision`` to fp32 until the ensemble is within ``max_drop``.

    Args:
        comps: Every component; those whose ``precision`` entry is already on fp32 are left alone.
        precision: The precision whose graph entries are assessed (``mixed``: the chosen graphs).
        evaluate: Evaluates the ensemble as ``comps`` now say: ``(result, drop_points)`` (it
            rewrites the bundle it evaluates first).
        revert: Points ``precision`` of one component at its fp32 graph.
        max_drop: Largest accepted drop against PyTorch, in points.
        ranker: Picks the next components to revert among the reduced ones.

    Returns:
        The report: the last evaluation, its drop, the steps taken.
    """
    result, drop = evaluate()
    steps: list[RevertStep] = []
    reduced = [c for c in comps if not on_reference(c, precision)]
    while drop > max_drop and reduced:
        group = ranker(reduced, precision)
        was = tuple(c.graphs[precision].chosen or c.graphs[precision].build_fallback or precision
                    for c in group)
        for comp in group:
            revert(comp)
        steps.append(RevertStep(tuple(c.key for c in group), was, drop, max_drop))
        log(f"  {precision}: {steps[-1]}")
        reduced = [c for c in reduced if c.key not in steps[-1].components]
        result, drop = evaluate()
    return AccuracyControlReport(result, drop, max_drop, tuple(steps),
                                 all(on_reference(c, precision) for c in comps))
