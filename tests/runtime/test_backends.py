"""The backend table: adding a backend is one module (a loader, a runner, one row), and nothing else
in the runtime lists backend names.

``ort-reference`` below is a small, real backend written as a newcomer would write one: ONNX
Runtime with every graph optimization off, one thread, its own loader and runner on the public
interface only. Registered for one test, a Session runs it by name and picks it in ``"auto"`` order.
"""
from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import pytest

from mmedge.errors import BackendUnavailable, RegistryError
from mmedge.runtime import Session, available_backends
from mmedge.runtime.backends import (BACKENDS, Backend, BaseLoader, BaseRunner, GraphRef, LoadSettings, TensorMeta,
                                     backend_order, get_backend, register_backend, resolve_backend)

REPO = Path(__file__).resolve().parents[2]
_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


@dataclass(frozen=True)
class ReferenceLoader(BaseLoader):
    """An ONNX Runtime session with no graph optimization, on one thread."""

    path: Path
    read: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    install_hint: ClassVar[str] = "pip install onnxruntime"

    @classmethod
    def availability(cls) -> str | None:
        return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"

    @classmethod
    def for_session(cls, settings: LoadSettings) -> Callable[[GraphRef], "ReferenceLoader"]:
        return lambda graph: cls(graph.path, read=graph.read)

    def __call__(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        source = self.read() if self.read is not None else str(self.path)
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


class ReferenceRunner(BaseRunner):
    """Runs the session its loader makes."""

    def _activate(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        self._session = self.loader()

        def metas(nodes) -> tuple[TensorMeta, ...]:
            return tuple(TensorMeta(n.name, np.dtype(_DTYPES[n.type]),
                                    tuple(d if isinstance(d, int) else None for d in n.shape)) for n in nodes)
        return metas(self._session.get_inputs()), metas(self._session.get_outputs())

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self._session.run(None, dict(feed))))


@pytest.fixture
def reference_backend():
    """``ort-reference``, ranked before every built-in backend, for one test."""
    row = register_backend(Backend("ort-reference", rank=5, loader=ReferenceLoader, runner=ReferenceRunner,
                                   summary="ONNX graphs, ONNX Runtime without graph optimizations"))
    yield row
    BACKENDS.unregister(row.name)


def _inputs(rng) -> dict[str, Any]:
    return dict(image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), text="seven")


def test_a_new_backend_runs_by_name_and_in_auto_order(bundle_path, reference_backend, rng):
    given = _inputs(rng)
    with Session(bundle_path, backend="ort", threads=1) as ort_session:
        want = ort_session.predict(**given).probabilities
    with Session(bundle_path, backend="ort-reference") as named:
        assert named.backend == "ort-reference" and named.backend_reason == "'ort-reference' was requested"
        pred = named.predict(**given)
        assert pred.backend == "ort-reference"
        np.testing.assert_allclose(pred.probabilities, want, atol=1e-5)
        assert all(isinstance(r, ReferenceRunner) and r.backend_fallback is None for r in named._runners.values())
    assert available_backends()[0] == backend_order()[0].name == "ort-reference"
    with Session(bundle_path) as auto:
        assert auto.backend == "ort-reference" and auto.backend_reason.startswith("auto: chose 'ort-reference'")


def test_the_table_orders_by_rank_and_refuses_clashes(reference_backend):
    order = backend_order()
    assert [b.name for b in order] == ["ort-reference", "tensorrt", "ort-trt", "ort-cuda", "openvino-gpu",
                                       "openvino-npu", "ort", "openvino"]
    assert [b.rank for b in order] == sorted(b.rank for b in order)
    with pytest.raises(RegistryError, match="rank 5 is taken by 'ort-reference'"):
        register_backend(Backend("other", rank=5, loader=ReferenceLoader, runner=ReferenceRunner))
    with pytest.raises(RegistryError, match="already registered"):
        register_backend(Backend("ort-reference", rank=6, loader=ReferenceLoader, runner=ReferenceRunner))
    assert "other" not in BACKENDS and BACKENDS["ort-reference"].rank == 5


def test_unknown_backend_lists_the_table_in_order():
    with pytest.raises(BackendUnavailable, match=r"unknown backend 'nope'; valid: \['auto', 'tensorrt', 'ort-trt'"):
        get_backend("nope")
    with pytest.raises(BackendUnavailable, match="unknown backend 'nope'"):
        resolve_backend("nope")
    for row in BACKENDS.values():
        assert issubclass(row.loader, BaseLoader) and issubclass(row.runner, BaseRunner) and row.install_hint


def test_without_engines_auto_skips_tensorrt_and_says_why():
    choice = resolve_backend("auto")
    assert choice.name != "tensorrt" and "(skipped tensorrt: " in choice.reason
    if get_backend("tensorrt").availability() is None:
        assert "no TensorRT engines built for this bundle (run `mmedge build`)" in choice.reason


@pytest.mark.parametrize("rel", ["runtime/session.py", "runtime/backends/__init__.py", "runtime/backends/base.py",
                                 "runtime/backends/table.py", "runtime/backends/fallback.py"])
def test_no_module_but_a_backends_own_names_a_backend(rel):
    """The table is the one place backend names live: the Session, the choice of a backend and the
    backend fallback hold no string that equals a backend name."""
    tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not literals & set(BACKENDS), sorted(literals & set(BACKENDS))
