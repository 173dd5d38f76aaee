"""Inference backends: one module per backend (its loader, its runner, its row in the backend table),
and the choice of a backend for ``"auto"``.

| name       | rank | loader              | runner           | runs                                          |
|------------|------|---------------------|------------------|-----------------------------------------------|
| `tensorrt` | 10   | `EngineLoader`      | `TensorRTRunner` | engines built on the device by `mmedge build` |
| `ort-trt`  | 20   | `OrtTensorRTLoader` | `OrtRunner`      | ONNX graphs, ORT TensorRT EP -> CUDA EP -> CPU |
| `ort-cuda` | 30   | `OrtCudaLoader`     | `OrtRunner`      | ONNX graphs, ORT CUDA EP -> CPU EP             |
| `openvino-gpu` | 40 | `OpenVINOGpuLoader` | `OpenVINORunner` | ONNX graphs, OpenVINO on an Intel GPU        |
| `openvino-npu` | 50 | `OpenVINONpuLoader` | `OpenVINORunner` | ONNX graphs, OpenVINO on an Intel NPU        |
| `ort`      | 90   | `OrtLoader`         | `OrtRunner`      | ONNX graphs, ORT CPU EP                        |
| `openvino` | 95   | `OpenVINOLoader`    | `OpenVINORunner` | ONNX graphs, OpenVINO CPU (by name, or placed) |

Adding a backend is one module in this package: a ``BaseLoader`` subclass, a ``BaseRunner``
subclass and one ``register_backend(Backend(...))`` call. Every module of the package is imported
here, so nothing else lists it; a backend module imports its heavy libraries lazily (inside its
loader and ``availability``), so that importing the runtime stays cheap and torch-free.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from mmedge.errors import BackendUnavailable
from mmedge.runtime.backends.base import BaseLoader, BaseRunner, GraphRef, LoadSettings, TensorMeta
from mmedge.runtime.backends.table import BACKENDS, Backend, backend_order, get_backend, register_backend

__all__ = ["BACKENDS", "Backend", "BackendChoice", "BaseLoader", "BaseRunner", "GraphRef", "LoadSettings",
           "TensorMeta", "available_backends", "backend_order", "get_backend", "open_runners", "register_backend",
           "resolve_backend"]


@dataclass(frozen=True)
class BackendChoice:
    """The backend a Session uses, and why it was chosen.

    Attributes:
        name: The backend.
        reason: Why (and where graphs were placed).
        placed: Components that run on another backend than ``name`` (``mixed``: the CPU backend
            export timed them fastest on; ``backends.placement``), component -> backend.
    """

    name: str
    reason: str
    placed: Mapping[str, str] = field(default_factory=dict)


def available_backends() -> list[str]:
    """Backends that can run on this machine, fastest first (``tensorrt`` also needs built engines)."""
    return [b.name for b in backend_order() if b.availability() is None]


def resolve_backend(requested: str = "auto", *, graphs: Sequence[GraphRef] = (),
                    settings: LoadSettings | None = None) -> BackendChoice:
    """Picks the backend to use.

    ``"auto"`` takes the first backend of ``backend_order()`` that has what it needs for ``graphs``
    (``BaseLoader.missing``, asked first because it is cheap: TensorRT needs engines from ``mmedge
    build``, OpenVINO graphs verified at export) and can run here, ending with ``ort``. A named
    backend is used as asked or refused; it is never silently replaced.

    Args:
        requested: ``"auto"`` or a name in ``BACKENDS``.
        graphs: The graphs to run (without them, backends that need built artifacts are skipped).
        settings: The Session's settings (where built artifacts live).

    Returns:
        The chosen backend and the reason.

    Raises:
        BackendUnavailable: an unknown or unavailable backend, with what is available
            and how to install the requested one.
    """
    if requested != "auto":
        row = get_backend(requested)
        problem = row.availability()
        if problem:
            raise BackendUnavailable(f"backend {requested!r} is not available here: {problem}. "
                                     f"Available: {available_backends()}. To install it: {row.install_hint}")
        return BackendChoice(requested, f"{requested!r} was requested")
    skipped = []
    for row in backend_order():
        problem = _skip_reason(row, graphs, settings)
        if problem is None:
            why = f"auto: chose {row.name!r}" + (f" (skipped {'; '.join(skipped)})" if skipped else "")
            return BackendChoice(row.name, why)
        skipped.append(f"{row.name}: {problem}")
    last = backend_order()[-1]
    raise BackendUnavailable(f"no backend can run here ({'; '.join(skipped)}); to install {last.name!r}: "
                             f"{last.install_hint}")


def _skip_reason(row: Backend, graphs: Sequence[GraphRef], settings: LoadSettings | None) -> str | None:
    """Why ``auto`` passes over ``row`` (None: it takes it).

    What the graphs need is asked first: it reads the manifest, while availability may import the
    backend's library and probe its devices (openvino: about 40 MiB and 0.4-1 s, measured) for a
    backend that would not take these graphs anyway. A loader whose check needs its library (TensorRT
    reads the device's engine folder) raises ``BackendUnavailable`` without it: then availability says why.
    """
    try:
        needs = row.loader.missing(graphs, settings)
    except BackendUnavailable as exc:
        return row.availability() or str(exc)
    return needs or row.availability()


def open_runners(backend: str | Backend, graphs: Sequence[GraphRef], settings: LoadSettings) -> dict[str, BaseRunner]:
    """Activated runners for ``graphs`` on one backend, by component (all deactivated again if one fails).

    Args:
        backend: A backend name or row.
        graphs: The graphs to run (``GraphRef.from_bundle``).
        settings: The Session's settings; the backend's loader takes the part that concerns it.
    """
    row = get_backend(backend) if isinstance(backend, str) else backend
    make = row.loader.for_session(settings)
    runners: dict[str, BaseRunner] = {}
    try:
        for graph in graphs:
            runners[graph.component] = runner = row.runner(make(graph))
            runner.activate()
    except BaseException:
        for runner in runners.values():
            runner.deactivate()
        raise
    return runners


def _import_backend_modules() -> None:
    """Imports every module of this package: each backend module registers its row."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_import_backend_modules()
