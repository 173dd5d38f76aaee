"""numpy's BLAS threads while the runtime preprocesses (``Session(preprocess_threads=...)``)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mmedge.errors import ConfigError
from mmedge.runtime import Session
from mmedge.runtime.blas_threads import BlasLimit, blas_threads

pytestmark = pytest.mark.skipif(not blas_threads(), reason="threadpoolctl finds no BLAS library here")


def test_the_limit_holds_inside_and_restores_after_nesting():
    before = blas_threads()
    with BlasLimit(1):
        assert set(blas_threads().values()) == {1}
        with BlasLimit(1):
            assert set(blas_threads().values()) == {1}
        assert set(blas_threads().values()) == {1}  # the inner exit does not restore early
    assert blas_threads() == before


def test_concurrent_holders_restore_the_process_setting_once():
    before, barrier = blas_threads(), threading.Barrier(4)

    def hold() -> None:
        for _ in range(50):
            with BlasLimit(1):
                barrier.wait(timeout=10) if _ == 0 else None
                np.ones((8, 8)) @ np.ones((8, 8))
    workers = [threading.Thread(target=hold) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert blas_threads() == before


def test_the_limit_holds_in_a_worker_thread_after_the_main_thread_set_it():
    """threadpoolctl 3.8 ignores a non-OpenMP OpenBLAS limit set from any thread but the first that set one."""
    with BlasLimit(1):  # the main thread sets (and, on threadpoolctl 3.8, takes control of) the limit first
        pass
    before, seen = blas_threads(), []

    def worker() -> None:
        with BlasLimit(1):
            seen.append(blas_threads())
        seen.append(blas_threads())
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert set(seen[0].values()) == {1} and seen[1] == before
    with BlasLimit(1):  # and the main thread can still set it afterwards
        assert set(blas_threads().values()) == {1}
    assert blas_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_a_bad_setting_is_a_config_error(bad, bundle_path):
    with pytest.raises(ConfigError, match="preprocess_threads must be a positive integer or None"):
        Session(bundle_path, preprocess_threads=bad)


def test_a_session_limits_blas_while_preprocessing_only(bundle_path, rng):
    before = blas_threads()
    seen: list[dict[str, int]] = []
    with Session(bundle_path, backend="ort", threads=1) as session:
        spy = session._preprocessors["audio"]
        session._preprocessors["audio"] = lambda samples: (seen.append(blas_threads()), spy(samples))[1]
        session.predict(image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), text="seven",
                        audio=rng.standard_normal(16000).astype(np.float32) * 0.1, audio_rate=16000)
        assert seen and set(seen[-1].values()) == {1}
        assert session._blas_limit.active
    assert blas_threads() == before
    with Session(bundle_path, backend="ort", threads=1, preprocess_threads=None) as free:
        assert not free._blas_limit.active
