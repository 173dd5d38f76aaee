"""Inference backends: one module per backend, each a runner registered in ``RUNNERS``,
and the choice of a backend for ``"auto"``.

| name       | runner              | runs                                                    |
|------------|---------------------|---------------------------------------------------------|
| `tensorrt` | `TensorRTRunner`    | engines built on the device by `mmedge build`           |
| `ort-trt`  | `OrtTensorRTRunner` | ONNX graphs, ORT TensorRT EP -> CUDA EP -> CPU EP        |
| `ort-cuda` | `OrtCudaRunner`     | ONNX graphs, ORT CUDA EP -> CPU EP                       |
| `ort`      | `OrtRunner`         | ONNX graphs, ORT CPU EP                                  |
"""
from __future__ import annotations

from dataclasses import dataclass

from mmedge.errors import BackendUnavailable
from mmedge.runtime.backends.base import RUNNERS, BaseRunner, TensorMeta, register_runner
from mmedge.runtime.backends.ort import OrtCudaRunner, OrtRunner, OrtTensorRTRunner, create_session
from mmedge.runtime.backends.trt import TensorRTRunner

__all__ = ["RUNNERS", "AUTO_ORDER", "BackendChoice", "BaseRunner", "TensorMeta", "OrtRunner", "OrtCudaRunner",
           "OrtTensorRTRunner", "TensorRTRunner", "available_backends", "create_session", "register_runner",
           "resolve_backend", "runner_class"]
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "ort-trt", "ort-cuda", "ort")  # fastest first


@dataclass(frozen=True)
class BackendChoice:
    """The backend a Session uses, and why it was chosen."""

    name: str
    reason: str


def available_backends() -> list[str]:
    """Backends that can run on this machine, fastest first (``tensorrt`` also needs built engines)."""
    return [name for name in AUTO_ORDER if RUNNERS[name].availability() is None]


def runner_class(name: str) -> type[BaseRunner]:
    """The runner class registered as ``name``; an unknown name lists the valid ones."""
    if name not in RUNNERS:
        raise BackendUnavailable(f"unknown backend {name!r}; valid: ['auto', {', '.join(map(repr, RUNNERS))}]")
    return RUNNERS[name]


def resolve_backend(requested: str = "auto", *, engines_ready: bool = False) -> BackendChoice:
    """Picks the backend to use.

    ``"auto"`` takes ``tensorrt`` if it is importable and the engines exist, else
    ``ort-trt`` / ``ort-cuda`` if those execution providers are in
    ``onnxruntime.get_available_providers()``, else ``ort``. A named backend is used
    as asked or refused; it is never silently replaced.

    Args:
        requested: ``"auto"`` or a name in ``RUNNERS``.
        engines_ready: Whether TensorRT engines for the bundle exist on this device.

    Returns:
        The chosen backend and the reason.

    Raises:
        BackendUnavailable: an unknown or unavailable backend, with what is available
            and how to install the requested one.
    """
    if requested != "auto":
        cls = runner_class(requested)
        problem = cls.availability()
        if problem:
            raise BackendUnavailable(f"backend {requested!r} is not available here: {problem}. "
                                     f"Available: {available_backends()}. To install it: {cls.install_hint}")
        return BackendChoice(requested, f"{requested!r} was requested")
    skipped = []
    for name in AUTO_ORDER:
        problem = RUNNERS[name].availability()
        if problem is None and name == "tensorrt" and not engines_ready:
            problem = "no TensorRT engines built for this bundle (run `mmedge build`)"
        if problem is None:
            why = f"auto: chose {name!r}" + (f" (skipped {'; '.join(skipped)})" if skipped else "")
            return BackendChoice(name, why)
        skipped.append(f"{name}: {problem}")
    raise BackendUnavailable(f"no backend can run here ({'; '.join(skipped)}); {OrtRunner.install_hint}")
