"""mmedge.runtime: the light, torch-free runtime (numpy + onnxruntime or tensorrt).

Public API (imported lazily, so ``import mmedge.runtime`` stays fast)::

    from mmedge.runtime import Session, Prediction, Bundle, available_backends

    with Session("bundle.mmedge", precision="int8") as session:
        pred = session.predict(image=frame, text="a cat", image_color_order="BGR")
        print(pred.label, pred.probability, pred.timings_ms["total"])
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Session", "Prediction", "Bundle", "available_backends", "resolve_backend", "BACKENDS", "BaseRunner"]

_LAZY = {
    "Session": "mmedge.runtime.session",
    "Prediction": "mmedge.runtime.prediction",
    "Bundle": "mmedge.runtime.bundle",
    "available_backends": "mmedge.runtime.backends",
    "resolve_backend": "mmedge.runtime.backends",
    "BACKENDS": "mmedge.runtime.backends",
    "BaseRunner": "mmedge.runtime.backends.base",
}

if TYPE_CHECKING:  # pragma: no cover
    from mmedge.runtime.bundle import Bundle
    from mmedge.runtime.prediction import Prediction
    from mmedge.runtime.backends.base import BaseRunner
    from mmedge.runtime.backends import BACKENDS, available_backends, resolve_backend
    from mmedge.runtime.session import Session


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmedge.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
