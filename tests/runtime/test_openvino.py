"""The OpenVINO backend (``runtime/backends/openvino.py``): skipped where openvino is not installed."""
from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pytest

from mmedge.runtime import Session
from mmedge.runtime.backends import backend_order, get_backend
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


def _verified_clone(bundle_path, tools, folder, ok=True):
    """A clone of the fixture bundle whose graph entries record export's OpenVINO check as ``ok``."""
    def verified(m):
        graphs = [g for e in m["encoders"].values() for g in e["graphs"].values()]
        for g in graphs + [g for mb in m["members"] for g in mb["graphs"].values()]:
            g["backends"] = {"openvino": {"ok": ok, "min_cosine": 1.0 if ok else 0.18, "min_cosine_required": 0.99999}}
    folder = tools.clone(bundle_path, folder)
    tools.edit_manifest(folder, verified)
    return folder


def test_auto_runs_onnx_runtime_on_the_cpu_even_for_checked_graphs(bundle_path, tools, monkeypatch, tmp_path):
    """At f32, OpenVINO measured slower than ONNX Runtime on the CPU: its CPU row ranks after ``ort``."""
    assert [b.name for b in backend_order()].index("ort") < [b.name for b in backend_order()].index("openvino")
    verified = _verified_clone(bundle_path, tools, tmp_path / "verified")
    with Session(verified, threads=1, engine_dir=tmp_path / "e") as auto:
        assert auto.backend == "ort" and "openvino:" not in auto.backend_reason  # never reached: ort runs first
    with Session(verified, backend="openvino", threads=1, engine_dir=tmp_path / "e") as named:
        assert named.backend == "openvino"  # by name it runs


@pytest.mark.parametrize("ok", [None, False, True], ids=["not-checked", "check-failed", "checked"])
def test_the_openvino_rows_take_only_graphs_export_checked_on_x86(bundle_path, tools, monkeypatch, tmp_path, ok):
    """The rule ``auto`` applies before an OpenVINO row (its GPU/NPU rows, or the CPU row ranked first by a
    plug-in): an x86 CPU, and every graph checked at export (a bundle exported without openvino is not)."""
    from mmedge.runtime import Bundle
    from mmedge.runtime.backends.base import GraphRef

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    folder = bundle_path if ok is None else _verified_clone(bundle_path, tools, tmp_path / "b", ok=ok)
    with Bundle.open(folder) as bundle:
        graphs = [GraphRef.from_bundle(bundle, c, "fp32") for c in bundle.components()]
    problem = OpenVINOLoader.missing(graphs, None)
    if ok:
        assert problem is None
    else:
        assert "auto takes OpenVINO only for graphs export verified on it" in problem
        assert "encoder.image" in problem and "backend='openvino'" in problem
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert "x86 CPUs only (this is aarch64)" in OpenVINOLoader.missing(graphs, None)


def test_a_session_never_writes_its_cache_into_the_bundle(bundle_path, tools, tmp_path, monkeypatch, rng):
    folder = tools.clone(bundle_path, tmp_path / "b")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    monkeypatch.setenv("MMEDGE_CACHE_DIR", str(tmp_path / "cache"))
    with Session(folder, backend="openvino", threads=1) as session:  # engine root: <bundle>/engines
        session.predict(**_inputs(rng, batch=1))
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert any((tmp_path / "cache" / "openvino").iterdir())  # the user cache holds the compiled blobs


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


def test_outputs_keep_their_onnx_names_when_openvino_folds_them(tmp_path):
    """A one-input Sum feeding a graph output: read from bytes, OpenVINO's port may be named after the
    producer (``m``); the runner still names it as the ONNX graph does."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Mul", ["x", "w"], ["m"]), helper.make_node("Sum", ["m"], ["probabilities"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["b", 4])],
                              [numpy_helper.from_array(np.full(4, 2.0, np.float32), "w")])
    path = tmp_path / "sum.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with OpenVINORunner(OpenVINOLoader(path, threads=1, read=path.read_bytes)) as runner:
        assert runner.output_names == ("probabilities",)
        out = runner.infer({"x": np.ones((2, 4), np.float32)})
        # Inputs are read in place and outputs handed over from OpenVINO's buffers: a later call changes
        # neither the caller's arrays nor an earlier result.
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        later = runner.infer({"x": x})
        np.testing.assert_array_equal(x, np.arange(8, dtype=np.float32).reshape(2, 4))
    np.testing.assert_allclose(out["probabilities"], 2.0)
    np.testing.assert_allclose(later["probabilities"], 2.0 * x)


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


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "mixed"])
def test_every_precision_runs_at_f32_inference_precision(bundle_path, tmp_path, precision):
    """bf16 (OpenVINO's default on AMX CPUs) is neither checked at export nor safe in 2026.4: never implied."""
    from mmedge.runtime import Bundle
    from mmedge.runtime.backends.base import GraphRef, LoadSettings

    with Bundle.open(bundle_path) as bundle:
        graph = GraphRef.from_bundle(bundle, "encoder.image", "fp32")
    loader = OpenVINOLoader.for_session(LoadSettings(bundle_path, precision, tmp_path))(graph)
    assert loader.inference_precision == "f32" and loader.config()["INFERENCE_PRECISION_HINT"] == "f32"
