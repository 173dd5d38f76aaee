"""The one ordered backend table: every backend's name, place in ``"auto"`` order, loader and runner.

A backend module adds its row when it is imported (``mmedge.runtime.backends`` imports every
module of its package, and plug-ins import theirs)::

    register_backend(Backend("ort", rank=90, loader=OrtLoader, runner=OrtRunner,
                             summary="ONNX graphs, ONNX Runtime CPU execution provider"))

``backend_order()`` is the order ``"auto"`` tries (lowest rank first: the fastest), and the order
in which a backend fallback names the slowest backend that really runs.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmedge.errors import BackendUnavailable, RegistryError
from mmedge.registry import Registry
from mmedge.runtime.backends.base import BaseLoader, BaseRunner

__all__ = ["Backend", "BACKENDS", "register_backend", "backend_order", "get_backend"]


@dataclass(frozen=True)
class Backend:
    """One row of the backend table.

    Attributes:
        name: What ``Session(backend=...)`` takes.
        rank: Place in ``"auto"`` order: lower is tried first (faster); ranks are unique.
        loader: The loader class: availability, install hint, how artifacts are made.
        runner: The runner class, constructed with one loader.
        summary: What it runs, in a few words (docs, messages).
        cpu: Its graphs run on CPU threads the Session sets (``LoadSettings.threads``), so a Session may
            run its encoders at once (``mmedge.runtime.encoder_lanes``).
    """

    name: str
    rank: int
    loader: type[BaseLoader]
    runner: type[BaseRunner]
    summary: str = ""
    cpu: bool = False

    def availability(self) -> str | None:
        """None when this backend can run here, else why not."""
        return self.loader.availability()

    @property
    def install_hint(self) -> str:
        """How to make this backend available."""
        return self.loader.install_hint


BACKENDS: Registry[Backend] = Registry("backend")


def register_backend(row: Backend) -> Backend:
    """Adds ``row`` to the table.

    Raises:
        RegistryError: its name or its rank is taken (pick another).
    """
    taken = [b.name for b in BACKENDS.values() if b.rank == row.rank]
    if taken:
        raise RegistryError(f"backend {row.name!r}: rank {row.rank} is taken by {taken[0]!r}; pick another rank "
                            f"(taken: {sorted(b.rank for b in BACKENDS.values())})")
    return BACKENDS.register(row.name)(row)


def backend_order() -> tuple[Backend, ...]:
    """Every backend, fastest first (by rank): the order ``"auto"`` tries."""
    return tuple(sorted(BACKENDS.values(), key=lambda b: b.rank))


def get_backend(name: str) -> Backend:
    """The row of backend ``name``.

    Raises:
        BackendUnavailable: an unknown name, listing the valid ones.
    """
    if name not in BACKENDS:
        names = ", ".join(repr(b.name) for b in backend_order())
        raise BackendUnavailable(f"unknown backend {name!r}; valid: ['auto', {names}]")
    return BACKENDS[name]
