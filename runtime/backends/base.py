"""The backend interface, after Polygraphy: a loader makes an artifact, a runner runs it.

A **loader** (``BaseLoader``) knows how a backend's artifact is made from one bundle graph: an
ONNX Runtime session with its execution providers and disabled optimizers, a deserialized
TensorRT engine from the engine folder, with or without CUDA graphs. Calling it makes the
artifact. Its class also says whether the backend can run here (``availability``), how to
install it, what must be built first (``missing``, ``build_missing``) and how a Session's
settings become its own typed options (``for_session``).

A **runner** (``BaseRunner``) only runs what its loader made: ``activate()`` calls the loader,
``infer(feed)`` maps input names to arrays and returns output names to arrays, ``deactivate()``
frees everything. Runners are context managers. The ensemble and the Session see only this
interface. Optional abilities are declared here with their defaults (``backend_fallback``).

Each backend is one row of the ordered backend table (``mmedge.runtime.backends.table``).
"""
from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from mmedge.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from mmedge.runtime.bundle import Bundle, GraphEntry

__all__ = ["BaseLoader", "BaseRunner", "BackendFallback", "GraphRef", "LoadSettings", "TensorMeta"]


@dataclass(frozen=True)
class TensorMeta:
    """A runner input or output: name, numpy dtype, shape (None for a dynamic axis)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class GraphRef:
    """One bundle graph that a runner stands for.

    Attributes:
        component: ``encoder.<modality>`` or ``head.<member>``.
        path: The ONNX file in the bundle.
        entry: Its manifest entry (sha256, and the facts export recorded for loaders, such as
            ``ort_disabled_optimizers``).
        read: Returns the graph's verified bytes (None: read ``path``).
    """

    component: str
    path: Path
    entry: "GraphEntry"
    read: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_bundle(cls, bundle: "Bundle", component: str, precision: str) -> "GraphRef":
        """The graph of ``component`` at ``precision``, read through the bundle's verified bytes."""
        return cls(component, bundle.graph_path(component, precision), bundle.graph_entry(component, precision),
                   read=functools.partial(bundle.graph_bytes, component, precision))


@dataclass(frozen=True)
class LoadSettings:
    """What a Session asks of the backend it opens; each loader class turns the part that concerns
    it into its own options (``BaseLoader.for_session``), so no runner sees another backend's options.

    Attributes:
        bundle_source: The bundle folder or ``.mmedge`` file (for messages and rebuild commands).
        precision: The precision the Session runs.
        engine_dir: The root for compiled artifacts, one folder per device key (TensorRT engines,
            ONNX Runtime's TensorRT caches).
        threads: CPU threads per graph for backends that use them (None: the backend's default).
        cuda_graph: Capture CUDA graphs for repeated input shapes (TensorRT).
        auto: The backend was chosen by ``auto``, not by name: a backend that fails to run a graph at
            run time may hand that graph to ONNX Runtime (a backend fallback, warned and reported).
        lanes: How many encoder graphs run at once (``mmedge.runtime.encoder_lanes``; 1: in turn);
            ``threads`` is then each graph's share.
    """

    bundle_source: Path
    precision: str
    engine_dir: Path
    threads: int | None = None
    cuda_graph: bool = False
    auto: bool = False
    lanes: int = 1

    def cache_folder(self, name: str) -> Path:
        """Where a backend caches what it compiles for this Session: ``<engine_dir>/<name>-cache``, or
        mmedge's user cache (``cache_root()/<name>``) when the engine root is inside the bundle folder
        (a Session never writes into a bundle: its files and hashes are the contract)."""
        from mmedge.runtime.integrity import cache_root

        root, source = Path(self.engine_dir).resolve(), Path(self.bundle_source).resolve()
        inside = source.is_dir() and (root == source or source in root.parents)
        return cache_root() / name if inside else root / f"{name}-cache"


@dataclass(frozen=True)
class BackendFallback:
    """A graph that runs on a slower backend than the one asked for (a "backend fallback", e.g.
    ONNX Runtime quietly running a CUDA graph on its CPU execution provider).

    Attributes:
        runs_as: The registered backend that really runs the graph.
        detail: What happened, for messages.
    """

    runs_as: str
    detail: str


class BaseLoader(abc.ABC):
    """Knows how one backend's artifact is made from one bundle graph; calling it makes it.

    Subclasses are usually frozen dataclasses whose fields are the backend's own typed options.

    Attributes:
        path: The file the artifact comes from (the ONNX graph, or a compiled engine), for messages.
        install_hint: How to make this backend available, for error messages.
        verified_at_export: Export runs every graph on this backend when it is available there and
            records the result in ``GraphEntry.backends[<backend name>]`` (``mmedge.export.backend_check``).
    """

    path: Path
    install_hint: ClassVar[str] = ""
    verified_at_export: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> str | None:
        """None when this backend can run here, else why not (without importing heavy modules if possible)."""

    @classmethod
    @abc.abstractmethod
    def for_session(cls, settings: LoadSettings) -> Callable[[GraphRef], "BaseLoader"]:
        """The loader of each graph of one Session (state shared by a Session's loaders is made here)."""

    @classmethod
    def missing(cls, graphs: Sequence[GraphRef], settings: LoadSettings | None) -> str | None:
        """What must be built on this device before these graphs can run (None: nothing; the default)."""
        return None

    @classmethod
    def build_missing(cls, bundle: "Bundle", graphs: Sequence[GraphRef], settings: LoadSettings) -> None:
        """Builds what ``missing`` reports, for ``Session(auto_build=True)`` (nothing by default)."""

    @abc.abstractmethod
    def __call__(self) -> Any:
        """Makes the artifact the runner runs.

        Raises:
            BundleError, BackendUnavailable, EngineMismatch: the artifact cannot be made, saying
                why and what to run.
        """


class BaseRunner(abc.ABC):
    """Base class of every backend runner: runs what its loader makes.

    Args:
        loader: The loader of the artifact this runner executes.
    """

    def __init__(self, loader: BaseLoader) -> None:
        self.loader = loader
        self.path = Path(loader.path)
        self.is_active = False
        self._inputs: tuple[TensorMeta, ...] = ()
        self._outputs: tuple[TensorMeta, ...] = ()

    # -- backend hooks ---------------------------------------------------------------

    @abc.abstractmethod
    def _activate(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        """Calls the loader; returns (inputs, outputs) metadata."""

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one validated feed."""

    def _deactivate(self) -> None:
        """Frees backend resources."""

    # -- optional abilities (a backend that lacks one keeps the default) ----------------

    @property
    def backend_fallback(self) -> BackendFallback | None:
        """Set when this graph runs on a slower backend than asked (after ``activate()``); None by default."""
        return None

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
