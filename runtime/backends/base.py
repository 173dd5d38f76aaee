"""The runner interface (after Polygraphy's ``BaseRunner``) and the backend registry.

One small class per backend, registered by name in ``RUNNERS`` with ``@register_runner``.

``activate()`` loads the graph or engine, ``infer(feed)`` maps input names to arrays and
returns output names to arrays, ``deactivate()`` frees everything. Runners are context
managers. The ensemble and the Session see only this interface.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from mmedge.errors import InputError
from mmedge.registry import Registry

__all__ = ["BaseRunner", "TensorMeta", "RunnerSetup", "RUNNERS", "register_runner"]


@dataclass(frozen=True)
class TensorMeta:
    """A runner input or output: name, numpy dtype, shape (None for a dynamic axis)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class RunnerSetup:
    """What a Session tells every runner it opens; each backend takes what concerns it
    (``BaseRunner.shared_kwargs``).

    Attributes:
        bundle_source: The bundle folder or ``.mmedge`` file (for messages and rebuild commands).
        precision: The precision the Session runs.
        engine_dir: The engine root (``<bundle>/engines`` by default), holding one folder per device key.
        cuda_graph: Capture CUDA graphs for repeated input shapes (TensorRT backend).
    """

    bundle_source: Path
    precision: str
    engine_dir: Path
    cuda_graph: bool = False


class BaseRunner(abc.ABC):
    """Base class of every backend runner.

    Args:
        path: The graph (``.onnx``) or engine file this runner executes.
        threads: CPU threads for backends that use them (None: the backend's default).
        source_sha256: sha256 of the bundle graph this runner stands for; backends that run a
            compiled artifact (TensorRT engines) check it against the artifact's build record.

    Attributes:
        name: The backend name this runner is registered under (``"ort"``, ``"tensorrt"``...).
        install_hint: How to make this backend available, for error messages.
    """

    name: ClassVar[str] = ""
    install_hint: ClassVar[str] = ""

    def __init__(self, path: str | Path, *, threads: int | None = None, source_sha256: str | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        self.source_sha256 = source_sha256
        self.is_active = False
        self._inputs: tuple[TensorMeta, ...] = ()
        self._outputs: tuple[TensorMeta, ...] = ()

    # -- backend hooks ---------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> str | None:
        """None when this backend can run here, else why not (without importing heavy modules if possible)."""

    @classmethod
    def artifact(cls, graph: Path, *, engine_dir: Path | None = None) -> Path:
        """The file this backend runs for the bundle graph ``graph`` (the ONNX file by default)."""
        return graph

    @classmethod
    def shared_kwargs(cls, setup: RunnerSetup) -> dict[str, Any]:
        """Extra constructor keywords shared by the runners of one Session (none by default)."""
        return {}

    @abc.abstractmethod
    def _activate(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        """Loads the graph; returns (inputs, outputs) metadata."""

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one validated feed."""

    def _deactivate(self) -> None:
        """Frees backend resources."""

    # -- public interface --------------------------------------------------------------

    def activate(self) -> None:
        """Loads the graph or engine (idempotent)."""
        if not self.is_active:
            self._inputs, self._outputs = self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        """Frees the graph or engine (idempotent)."""
        if self.is_active:
            self._deactivate()
            self.is_active = False

    @property
    def input_names(self) -> tuple[str, ...]:
        """Input names, in graph order (after ``activate()``)."""
        return tuple(t.name for t in self._inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Output names, in graph order (after ``activate()``)."""
        return tuple(t.name for t in self._outputs)

    @property
    def inputs(self) -> tuple[TensorMeta, ...]:
        """Input metadata (after ``activate()``)."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorMeta, ...]:
        """Output metadata (after ``activate()``)."""
        return self._outputs

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the graph on ``feed``.

        Args:
            feed: input name -> array; names, dtypes, ranks and fixed dims must match.

        Returns:
            output name -> array.

        Raises:
            InputError: a missing or unexpected input, or a wrong dtype, rank or dimension.
            RuntimeError: the runner was not activated.
        """
        if not self.is_active:
            raise RuntimeError(f"{type(self).__name__} for {self.path.name} is not active; call activate() "
                               "or use it as a context manager")
        self._check_feed(feed)
        return self._infer(feed)

    def _check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        names = set(self.input_names)
        missing, unexpected = sorted(names - set(feed)), sorted(set(feed) - names)
        if missing or unexpected:
            raise InputError(f"{self.path.name}: inputs must be {list(self.input_names)}; "
                             f"missing {missing}, unexpected {unexpected}")
        for meta in self._inputs:
            _check_array(self.path.name, meta, feed[meta.name])

    def __enter__(self) -> "BaseRunner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, active={self.is_active})"


def _check_array(graph: str, meta: TensorMeta, value: object) -> None:
    if not isinstance(value, np.ndarray):
        raise InputError(f"{graph}: input {meta.name!r} must be a numpy array, got {type(value).__name__}")
    if value.dtype != meta.dtype:
        raise InputError(f"{graph}: input {meta.name!r} must be {meta.dtype}, got {value.dtype}")
    if value.ndim != len(meta.shape):
        raise InputError(f"{graph}: input {meta.name!r} must have rank {len(meta.shape)} "
                         f"(shape {list(meta.shape)}), got shape {value.shape}")
    for axis, (want, got) in enumerate(zip(meta.shape, value.shape)):
        if want is not None and want != got:
            raise InputError(f"{graph}: input {meta.name!r} axis {axis} must be {want} "
                             f"(shape {list(meta.shape)}), got shape {value.shape}")


RUNNERS: Registry[type[BaseRunner]] = Registry("backend")


def register_runner(cls: type[BaseRunner]) -> type[BaseRunner]:
    """Class decorator: registers a runner under its ``name`` (a duplicate name is an error)."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    return RUNNERS.register(cls.name)(cls)
