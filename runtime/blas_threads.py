"""numpy's BLAS threads while the runtime preprocesses: ``Session(preprocess_threads=1)``.

numpy's OpenBLAS keeps a pool of as many threads as cores, and they busy-wait for a while after
each matmul (the log-mel filterbank's, a resize's): on a small CPU they then fight the backend's
own threads for the cores (measured on 2 cores: a PyTorch pipeline at p50 92-120 ms with OpenBLAS
at its default, 18.7 ms with one BLAS thread). ``BlasLimit`` holds BLAS to a few threads while
preprocessing runs and restores the process's setting afterwards, so an application's own numpy
work keeps its threads between calls.

The limit is process-wide while it is held (BLAS libraries have one setting per process): the
first of several concurrent holders sets it, the last one restores it. ``threadpoolctl`` finds the
BLAS libraries; without it the limit does nothing and ``BlasLimit.active`` says so.

threadpoolctl 3.8 lets only the first Python thread that sets a (non-OpenMP) OpenBLAS's limit set
it again; in any other thread the call silently does nothing. A Session called from a camera or
worker thread after the main thread had predicted once then ran its log-mel matmul on every BLAS
thread (and gave results differing in the last bit from a main-thread call). The limit here is
process-wide and taken under one lock, so it takes control of the setting each time it changes it
(``_set_threads``).
"""
from __future__ import annotations

import functools
import threading
from typing import Any

from mmedge.errors import ConfigError

__all__ = ["BlasLimit", "blas_threads", "refresh_blas_libraries"]

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"depth": 0, "saved": []}


@functools.lru_cache(maxsize=1)
def _controllers() -> tuple[Any, ...]:
    """threadpoolctl's controllers of the BLAS libraries loaded now (numpy's), found once."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return ()
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


def refresh_blas_libraries() -> None:
    """Looks for BLAS libraries again on the next limit (after a library that loads one, e.g. scipy)."""
    _controllers.cache_clear()


def blas_threads() -> dict[str, int]:
    """Each loaded BLAS library (``openblas``, ``mkl``, ...) and its current thread count (empty
    when ``threadpoolctl`` is not installed)."""
    return {c.internal_api: int(c.get_num_threads()) for c in _controllers()}


def _set_threads(controller: Any, threads: int) -> None:
    """Sets one BLAS library's threads from whichever thread holds ``_LOCK`` (see the module docstring)."""
    take_control = getattr(type(controller), "clear_controlling_thread", None)  # threadpoolctl >= 3.8
    if take_control is not None:
        take_control(force=True)
    controller.set_num_threads(threads)


class BlasLimit:
    """A re-entrant, thread-safe context manager holding BLAS to ``threads`` threads.

    Args:
        threads: BLAS threads while held (None: leave the process's setting alone).

    Raises:
        ConfigError: ``threads`` is not a positive integer or None.
    """

    def __init__(self, threads: int | None) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"preprocess_threads must be a positive integer or None, got {threads!r}")
        self.threads = threads

    @property
    def active(self) -> bool:
        """Whether holding this limit changes anything (a limit was asked and a BLAS library is found)."""
        return self.threads is not None and bool(_controllers())

    def __enter__(self) -> "BlasLimit":
        if self.threads is None:
            return self
        with _LOCK:
            if _STATE["depth"] == 0:
                _STATE["saved"] = [(c, c.get_num_threads()) for c in _controllers()]
                for c, _n in _STATE["saved"]:
                    _set_threads(c, self.threads)
            _STATE["depth"] += 1
        return self

    def __exit__(self, *exc: object) -> None:
        if self.threads is None:
            return
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                for c, n in _STATE["saved"]:
                    _set_threads(c, n)
                _STATE["saved"] = []
