"""Backend fallback: what really runs, compared with the backend that was chosen.

``ort-cuda`` and ``ort-trt`` ask ONNX Runtime for GPU execution providers; when one fails to
load (missing CUDA or TensorRT libraries, an unsupported GPU), ONNX Runtime quietly runs the graph
on the next provider in the list, down to the CPU. Every runner says so through its declared
ability ``BaseRunner.backend_fallback``; ``honest_choice`` looks at every runner after loading:
a backend fallback is refused (``strict=True``) or reported, in ``Session.backend`` (the slowest
backend that really runs, by the order of the backend table; ``Session.backends`` per graph, with
``mixed``'s placements), ``Session.backend_reason`` and a
``BackendFallbackWarning``.

(Not to be confused with export's accuracy fallback to fp32, or a failed engine build.)
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Mapping

from mmedge.errors import BackendUnavailable
from mmedge.runtime.backends.base import BaseRunner
from mmedge.runtime.backends.table import BACKENDS, backend_order

__all__ = ["BackendFallbackWarning", "honest_choice"]


class BackendFallbackWarning(RuntimeWarning):
    """The requested backend loaded, but runs some graphs on a slower backend (a backend fallback)."""


def honest_choice(choice, runners: Mapping[str, BaseRunner], *, strict: bool):
    """The backend that really runs, and why.

    Args:
        choice: The ``BackendChoice`` made before loading.
        runners: Component name -> activated runner.
        strict: Refuse a backend fallback instead of reporting it.

    Returns:
        ``choice`` when every runner runs as requested; else a ``BackendChoice`` naming the slowest
        backend that really runs, with the backend fallback in its reason.

    Raises:
        BackendUnavailable: a backend fallback with ``strict=True`` (what runs where, and how to
            install the requested backend).
    """
    fell = {c: r.backend_fallback for c, r in runners.items() if r.backend_fallback is not None}
    if not fell:
        return choice
    detail = "; ".join(f"{component}: {f.detail}" for component, f in fell.items())
    hint = BACKENDS[choice.name].install_hint if choice.name in BACKENDS else ""
    if strict:
        raise BackendUnavailable(f"backend {choice.name!r} was requested, but it fell back ({detail}). "
                                 f"To run it: {hint}; or leave strict off to accept the backend fallback")
    order = [b.name for b in backend_order()]
    actual = max((f.runs_as for f in fell.values()), key=lambda n: order.index(n) if n in order else len(order))
    reason = (f"{choice.reason}, but it fell back ({detail}): the backend that runs is {actual!r}; "
              f"pass strict=True to refuse a backend fallback. To run {choice.name!r}: {hint}")
    warnings.warn(f"mmedge: {choice.name!r} fell back: {detail}", BackendFallbackWarning, stacklevel=4)
    return replace(choice, name=actual, reason=reason)
