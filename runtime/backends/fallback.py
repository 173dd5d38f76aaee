"""Honest backends: what ONNX Runtime really runs, compared with the backend that was chosen.

``ort-cuda`` and ``ort-trt`` ask ONNX Runtime for GPU execution providers; when one fails to
load (missing CUDA or TensorRT libraries, an unsupported GPU), ONNX Runtime quietly runs the graph
on the next provider in the list, down to the CPU. ``honest_choice`` looks at every runner after
loading: a fallback is refused (``strict=True``) or reported, in ``Session.backend`` (the backend
that really runs), ``Session.backend_reason`` and a ``BackendFallbackWarning``.
"""
from __future__ import annotations

import warnings
from typing import Mapping

from mmedge.errors import BackendUnavailable
from mmedge.runtime.backends.base import RUNNERS, BaseRunner

__all__ = ["BackendFallbackWarning", "honest_choice"]

_ORDER = ("tensorrt", "ort-trt", "ort-cuda", "ort")  # fastest first, as backends.AUTO_ORDER


class BackendFallbackWarning(RuntimeWarning):
    """The requested backend loaded, but runs some graphs on a slower execution provider."""


def _runs_on(runner: BaseRunner) -> str:
    """The registered ONNX Runtime backend whose first provider is the one this runner really uses."""
    active = getattr(runner, "active_providers", None) or []
    for name in _ORDER:
        providers = getattr(RUNNERS[name], "providers", None) if name in RUNNERS else None
        if providers and active and providers[0] == active[0]:
            return name
    return runner.name


def honest_choice(choice, runners: Mapping[str, BaseRunner], *, strict: bool):
    """The backend that really runs, and why.

    Args:
        choice: The ``BackendChoice`` made before loading.
        runners: Component name -> activated runner.
        strict: Refuse a fallback instead of reporting it.

    Returns:
        ``choice`` when every runner runs on the requested provider; else a ``BackendChoice``
        naming the slowest backend that really runs, with the fallback in its reason.

    Raises:
        BackendUnavailable: a fallback with ``strict=True`` (what runs where, and how to install the
            requested backend).
    """
    fell = {c: r.fallback for c, r in runners.items() if getattr(r, "fallback", None)}
    if not fell:
        return choice
    detail = "; ".join(f"{component}: {why}" for component, why in fell.items())
    hint = RUNNERS[choice.name].install_hint if choice.name in RUNNERS else ""
    if strict:
        raise BackendUnavailable(f"backend {choice.name!r} was requested, but ONNX Runtime fell back ({detail}). "
                                 f"To run it: {hint}; or leave strict off to accept the fallback")
    actual = max((_runs_on(r) for r in runners.values()), key=_ORDER.index)
    reason = (f"{choice.reason}, but ONNX Runtime fell back ({detail}): the backend that runs is {actual!r}; "
              f"pass strict=True to refuse a fallback. To run {choice.name!r}: {hint}")
    warnings.warn(f"mmedge: {choice.name!r} fell back: {detail}", BackendFallbackWarning, stacklevel=4)
    return type(choice)(actual, reason)
