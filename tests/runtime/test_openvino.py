"""The OpenVINO backend (``runtime/backends/openvino.py``): skipped where openvino is not installed."""
from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pytest

from mmedge.runtime import Session
from mmedge.runtime.backends import get_backend, resolve_backend
from mmedge.runtime.backends.openvino import CACHE_FOLDER, OpenVINOLoader, OpenVINORunner

ov = pytest.importorskip("openvino", reason="the OpenVINO backend needs pip install 'mmedge[openvino]'")


def _inputs(rng, batch: int = 3) -> dict:
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(batch)]
    waves = [rng.standard_normal(16000).astype(np.float32) * 0.1 for _ in range(batch)]
    return dict(image=images, text=["seven", "a photo of the digit four", "one"][:batch], audio=waves,
                audio_rate=16000)


def test_openvino_runs_the_bundle_like_onnx_runtime(bundle_path, rng, tmp_path):
    given = _inputs(rng)
    with Session(bundle_path, backend="ort", threads=1) as ort_session:
        want = ort_session.predict(**given)
    with Session(bundle_path, backend="openvino", threads=1, engine_dir=tmp_path) as session:
        assert session.backend == "openvino" and session.backend_reason == "'openvino' was requested"
        pred = session.predict(**given)
        runners = session._runners.values()
        assert all(isinstance(r, OpenVINORunner) and r.inference_precision == "f32" for r in runners)
        assert all(r.loader.threads == 1 and r.loader.config()["INFERENCE_NUM_THREADS"] == 1 for r in runners)
    np.testing.assert_allclose(pred.probabilities, want.probabilities, atol=1e-4)
    assert pred.backend == "openvino" and pred.labels == want.labels
    assert any((tmp_path / CACHE_FOLDER).iterdir())  # compiled blobs cached for the next start


def test_auto_takes_openvino_on_x86_and_onnx_runtime_elsewhere(bundle_path, monkeypatch, tmp_path):
    if platform.machine().lower() in ("x86_64", "amd64"):
        with Session(bundle_path, threads=1, engine_dir=tmp_path) as auto:
            assert auto.backend == "openvino" and auto.backend_reason.startswith("auto: chose 'openvino'")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    choice = resolve_backend("auto")
    assert choice.name == "ort" and "openvino: auto takes OpenVINO on x86 CPUs only (this is aarch64)" in choice.reason
    assert resolve_backend("openvino").name == "openvino"  # by name it still runs there


def test_auto_keeps_quantized_graphs_on_onnx_runtime(bundle_path, monkeypatch):
    """Graphs whose entry records quantized activations are not taken to OpenVINO by ``auto``."""
    import dataclasses

    from mmedge.runtime import Bundle
    from mmedge.runtime.backends.base import GraphRef

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    with Bundle.open(bundle_path) as bundle:
        graphs = [GraphRef.from_bundle(bundle, c, "fp32") for c in bundle.components()]
    int8 = dataclasses.replace(graphs[0], entry=dataclasses.replace(
        graphs[0].entry, quantization={"tool": "nncf", "activations": "u8 per-tensor"}))
    weight_only = dataclasses.replace(graphs[0], entry=dataclasses.replace(
        graphs[0].entry, quantization={"tool": "weight-only int8"}))
    assert OpenVINOLoader.missing(graphs, None) is None
    assert OpenVINOLoader.missing([weight_only, *graphs[1:]], None) is None
    problem = OpenVINOLoader.missing([int8, *graphs[1:]], None)
    assert problem is not None and graphs[0].component in problem and "backend='openvino'" in problem


def _quantized_image_graph(bundle_path, tmp_path, rng):
    """ONNX Runtime's static QDQ int8 of the fixture's image encoder (what an int8 bundle graph is)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"pixel_values": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)}
                             for _ in range(4)])

        def get_next(self):
            return next(self._it, None)

    out = tmp_path / "image.int8.onnx"
    quantize_static(str(bundle_path / "encoders" / "image.fp32.onnx"), str(out), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def test_a_quantized_graph_gives_each_row_what_it_gives_alone(bundle_path, tmp_path, rng):
    graph = _quantized_image_graph(bundle_path, tmp_path, rng)
    batch = rng.standard_normal((4, 3, 64, 64)).astype(np.float32)
    with OpenVINORunner(OpenVINOLoader(graph, threads=1)) as runner:
        assert runner.per_row  # Q/DQ found in the graph
        together = runner.infer({"pixel_values": batch})
        alone = [runner.infer({"pixel_values": batch[i:i + 1]}) for i in range(4)]
    for name in runner.output_names:
        np.testing.assert_allclose(together[name], np.concatenate([a[name] for a in alone]), atol=1e-5)


def test_a_damaged_graph_is_a_bundle_error(tmp_path):
    from mmedge.errors import BundleError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx graph")
    with pytest.raises(BundleError, match="OpenVINO cannot compile .*bad.onnx.*backend='ort'"):
        OpenVINORunner(OpenVINOLoader(bad)).activate()


def test_importing_the_runtime_does_not_import_openvino():
    code = ("import sys, mmedge.runtime; from mmedge.runtime import Session; "
            "from mmedge.runtime.backends import backend_order; backend_order(); print('openvino' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert get_backend("openvino").install_hint.startswith("pip install 'mmedge[openvino]'")
