"""The TensorRT runner's CUDA side without a GPU (issue 20 items 2-5 and the cuda-python check).

- Real cuda-python 12.x and 13.x (installed with pip into a cache folder, never into the test
  environment) run ``cudart_probe.py``: every cudart function mmedge calls, with the runner's
  argument types, returns an error code here, and each becomes a typed error; a driver too old
  (``cudaErrorInsufficientDriver``) says so, not "no NVIDIA GPU". Every ``cudart.X.Y`` chain in
  mmedge's source must exist in both versions, and every cudart call must be in the probe.
- ``CudaGraphs``' bookkeeping (one execution context per captured shape, bounded, a failed
  capture falling back to plain enqueues) with small fake contexts: they stand in for TensorRT's
  ``IExecutionContext`` only because TensorRT cannot be installed on these machines. The same
  behaviour on a GPU is ``tests/e2e/test_tensorrt_gpu.py``'s alternating-shape test.
- One TensorRT logger per process (a fake module: TensorRT is unavailable here).
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from mmedge.errors import BackendUnavailable, CudaError
from mmedge.runtime.backends.trt_cuda import CudaGraphs, CudaGraphWarning
from mmedge.runtime.backends.trt_engines import tensorrt_logger

ROOT = Path(__file__).resolve().parents[2]
CUDA_SOURCES = ("runtime/backends/trt.py", "runtime/backends/trt_cuda.py", "runtime/backends/trt_engines.py",
                "export/engine_build.py")
CUDA_PYTHON = {"12": "cuda-python>=12,<13", "13": "cuda-python>=13,<14"}
TRT_SOURCES = ("runtime/backends/trt.py", "runtime/backends/trt_engines.py", "export/engine_build.py")


def _cudart_chains() -> tuple[set[str], set[str]]:
    """(every ``cudart.A.B`` chain, the names called as ``cudart.X(...)``) in mmedge's CUDA code."""
    chains, called = set(), set()
    for rel in CUDA_SOURCES:
        for node in ast.walk(ast.parse((ROOT / rel).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_cudart(node.func.value):
                called.add(node.func.attr)
            if not isinstance(node, ast.Attribute):
                continue
            parts, base = [node.attr], node.value
            while isinstance(base, ast.Attribute) and not _is_cudart(base):
                parts.insert(0, base.attr)
                base = base.value
            if _is_cudart(base):
                chains.add(".".join(parts))
    return chains, called


def _is_cudart(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "cudart") or \
        (isinstance(node, ast.Attribute) and node.attr in ("_cudart", "cudart"))


def _install(major: str) -> Path:
    cache = Path(os.environ.get("MMEDGE_CUDA_PYTHON_CACHE", Path.home() / ".cache" / "mmedge" / "cuda-python"))
    target = cache / f"cu{major}"
    if (target / "cuda" / "bindings").is_dir():
        return target
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
           CUDA_PYTHON[major], "cuda-bindings" + CUDA_PYTHON[major][len("cuda-python"):], "cuda-pathfinder"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        why = f"cannot install {CUDA_PYTHON[major]} with pip ({' '.join(cmd)}): {out.stderr[-1500:]}"
        if os.environ.get("MMEDGE_OFFLINE") == "1":
            pytest.skip(f"MMEDGE_OFFLINE=1: {why}")
        pytest.fail(why)
    return target


@pytest.fixture(scope="module", params=sorted(CUDA_PYTHON))
def probe(request) -> dict:
    chains, _ = _cudart_chains()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_install(request.param)), str(ROOT)])}
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("cudart_probe.py")), *sorted(chains)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["version"].startswith(request.param + "."), result["version"]
    return result


def test_every_cudart_name_exists_and_every_call_is_probed(probe):
    chains, called = _cudart_chains()
    assert {"cudaStreamCreateWithFlags", "cudaStreamNonBlocking", "cudaGraphLaunch"} <= chains
    assert "cudaStreamCreate" not in called  # a blocking stream: captures break on legacy-stream work
    assert probe["missing"] == [], f"cuda-python {probe['version']} lacks {probe['missing']}"
    probed = set(" ".join(probe["calls"]).replace("(", " ").split()) | {
        "cudaGetDeviceCount", "cudaDriverGetVersion", "cudaRuntimeGetVersion", "cudaGetErrorString",  # gpu_problem
        "cudaStreamCreateWithFlags", "cudaMalloc", "cudaMallocHost", "cudaGetDevice", "cudaGetDeviceProperties",
        "cudaStreamBeginCapture"}  # through CudaStream, PinnedBuffer, probe_gpu, capture_graph
    assert called <= probed, sorted(called - probed)


def test_cuda_calls_without_a_gpu_become_typed_errors(probe):
    calls = probe["calls"]
    untyped = {k: v for k, v in calls.items() if v.get("untyped")}
    assert not untyped, f"cuda-python {probe['version']}: untyped errors (wrong argument types?) {untyped}"
    if "ok" in calls["gpu_problem"] and calls["gpu_problem"]["ok"] == "None":
        pytest.skip("a GPU is visible: the error paths are not taken")
    problem = calls["gpu_problem"]["ok"]
    assert "cudaErrorInsufficientDriver" in problem and "too old" in problem and "no NVIDIA GPU is visible" \
        not in problem
    for name, got in calls.items():
        if name not in ("gpu_problem", "ort_trt_cache_dir"):
            assert got["error"] == "BackendUnavailable" and "driver" in got["message"], (name, got)
    assert "unidentified-gpu" in calls["ort_trt_cache_dir"]["ok"]
    assert probe["codes"] == {"cudaErrorInsufficientDriver": "BackendUnavailable", "cudaErrorNoDevice":
                              "BackendUnavailable", "cudaErrorMemoryAllocation": "CudaError", "cudaErrorStubLibrary":
                              "BackendUnavailable", "cudaErrorSystemDriverMismatch": "BackendUnavailable",
                              "cudaErrorDevicesUnavailable": "BackendUnavailable", "cudaErrorInvalidValue": "CudaError"}


# -- CUDA graphs: the bookkeeping ---------------------------------------------------------------


class FakeContext:
    """Stands in for TensorRT's IExecutionContext (TensorRT cannot be installed here): it records
    the shape it was given and refuses to change shape after a graph was captured on it."""

    made = 0

    def __init__(self) -> None:
        FakeContext.made += 1
        self.id, self.shape, self.captured_shape, self.enqueues = FakeContext.made, None, None, 0

    def set_input_shape(self, shape: tuple) -> None:
        if self.captured_shape is not None and shape != self.captured_shape:
            raise AssertionError(f"context {self.id} captured at {self.captured_shape} was set to {shape}")
        self.shape = shape


class Harness:
    """Runs calls through ``CudaGraphs.execute`` like the runner does, recording what ran where."""

    def __init__(self, capacity: int = 4, fail_capture: bool = False) -> None:
        self.main, self.launched, self.destroyed, self.fail = FakeContext(), [], [], fail_capture
        self.graphs = CudaGraphs(FakeContext, self.capture, self.launched.append, self.destroyed.append,
                                 capacity=capacity, name="fake.engine")

    def capture(self, context: FakeContext) -> tuple:
        if self.fail:
            raise CudaError("cudaStreamEndCapture failed: cudaErrorStreamCaptureInvalidated")
        context.captured_shape = context.shape
        return ("graph", context.id, context.shape)

    def enqueue(self, context: FakeContext) -> None:
        context.enqueues += 1

    def call(self, shape: tuple) -> FakeContext:
        return self.graphs.execute(shape, self.main, lambda ctx: (ctx.set_input_shape(shape), ctx)[1], self.enqueue)


def test_alternating_shapes_replay_each_graph_on_its_own_context():
    h = Harness()
    used = [h.call(shape) for shape in [(1, 3), (3, 3), (1, 3), (3, 3), (1, 3)]]
    assert h.main.enqueues == 0 and used[0] is used[2] is used[4] and used[1] is used[3] and used[0] is not used[1]
    assert h.launched == [("graph", used[0].id, (1, 3)), ("graph", used[1].id, (3, 3)), ("graph", used[0].id, (1, 3))]
    assert used[0].enqueues == used[1].enqueues == 1  # the first call of a shape runs, then is captured
    assert h.graphs.keys() == [(3, 3), (1, 3)] and h.destroyed == []


def test_graphs_are_bounded_least_recently_used_first():
    h = Harness(capacity=2)
    first = h.call((1,))
    h.call((2,))
    h.call((1,))  # (1,) is now the most recent
    h.call((3,))  # evicts (2,)
    assert h.graphs.keys() == [(1,), (3,)] and [g[2] for g in h.destroyed] == [(2,)]
    assert h.call((1,)) is first and h.launched[-1] == ("graph", first.id, (1,))
    again = h.call((2,))  # captured anew, on a new context
    assert again.captured_shape == (2,) and len(h.graphs) == 2


def test_a_failed_capture_falls_back_to_plain_enqueues_for_that_call_and_later_ones():
    h = Harness(fail_capture=True)
    with pytest.warns(CudaGraphWarning, match="fake.engine.*cudaErrorStreamCaptureInvalidated"):
        first = h.call((1, 3))
    assert first.enqueues == 1 and h.graphs.failed and h.launched == []
    for shape in [(3, 3), (1, 3), (3, 3)]:
        assert h.call(shape) is h.main
    assert h.main.enqueues == 3 and len(h.graphs) == 0


def test_clear_drops_every_graph():
    h = Harness()
    h.call((1,))
    h.call((2,))
    h.graphs.clear()
    assert len(h.graphs) == 0 and len(h.destroyed) == 2
    assert h.call((1,)).captured_shape == (1,)
    with pytest.raises(ValueError):
        CudaGraphs(FakeContext, h.capture, h.launched.append, h.destroyed.append, capacity=0)


# -- one logger per process ---------------------------------------------------------------------


def test_one_tensorrt_logger_per_process():
    made = []

    class Logger:  # the fake ``tensorrt`` module's Logger (TensorRT is unavailable here)
        WARNING = 2

        def __init__(self, severity):
            made.append(severity)

    fake = types.SimpleNamespace(Logger=Logger)
    assert tensorrt_logger(fake) is tensorrt_logger(fake) and made == [Logger.WARNING]


def test_only_tensorrt_logger_makes_a_logger():
    """The builder and the runtime both take the shared logger: ``Logger(`` is called in one place."""
    calls = []
    for rel in TRT_SOURCES:
        for node in ast.walk(ast.parse((ROOT / rel).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Logger":
                calls.append(f"{rel}:{node.lineno}")
    assert len(calls) == 1 and calls[0].startswith("runtime/backends/trt_engines.py"), calls


def test_backend_unavailable_is_not_a_cuda_error():
    assert not issubclass(BackendUnavailable, CudaError) and issubclass(CudaError, RuntimeError)


def test_a_driver_older_than_cuda_python_names_both_versions_and_the_extras():
    """The one path the real cuda-python cannot take here (a driver is loaded, but too old): a stand-in
    for cudart answering the two version queries as an R535 driver (CUDA 12.2) under cuda-python 13
    would, because no driver is installed on this machine."""
    import enum

    from mmedge.runtime.backends.trt_cuda import cuda_error

    class Err(enum.Enum):
        cudaSuccess = 0
        cudaErrorInsufficientDriver = 35

    cudart = types.SimpleNamespace(cudaError_t=Err, cudaDriverGetVersion=lambda: (Err.cudaSuccess, 12020),
                                   cudaRuntimeGetVersion=lambda: (Err.cudaSuccess, 13040))
    error = cuda_error(cudart, Err.cudaErrorInsufficientDriver, "cudaGetDeviceCount")
    message = str(error)
    assert isinstance(error, BackendUnavailable)
    for part in ("too old", "CUDA 13.4 runtime", "supports CUDA up to 12.2", "mmedge[tensorrt-cu12]", "R580"):
        assert part in message, part
    assert "no NVIDIA GPU" not in message
