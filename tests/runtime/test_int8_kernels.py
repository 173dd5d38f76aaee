"""Exact 8-bit integer products on every CPU (``mmedge.runtime.int8_kernels``, the runtime's ONNX Runtime
options, OpenVINO's int8 graphs on x86 CPUs without VNNI)."""
from __future__ import annotations

import platform
import warnings
from dataclasses import replace

import numpy as np
import pytest

from mmedge.runtime import int8_kernels
from mmedge.runtime.backends.ort import create_session, session_options

K = 64  # 32 pairs of products


def _qdq_matmul() -> bytes:
    """x (1, K) -> u8 -> MatMul with s8 weights all 127 -> float: ONNX Runtime fuses it into its u8 x s8 kernel."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "zu"),
             numpy_helper.from_array(np.full((K, 4), 127, np.int8), "w"), numpy_helper.from_array(np.array(0, np.int8), "zs")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zu"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zu"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "s", "zs"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    graph = helper.make_graph(nodes, "qdq_matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_the_runtime_computes_the_largest_u8_s8_products_exactly():
    """255 * 127 summed over 64 products: 2072640. A u8 x s8 kernel on an x86 CPU without VNNI adds each
    pair into int16 and gives 32 * 32767 = 1048544 unless ONNX Runtime is told to avoid it."""
    pytest.importorskip("onnx")
    import onnxruntime as ort

    x = np.full((1, K), 255.0, np.float32)
    np.testing.assert_array_equal(create_session(_qdq_matmul()).run(None, {"x": x})[0], 255 * 127 * K)
    if int8_kernels.int8_pairs_saturate():  # ONNX Runtime's default here: the saturation the option avoids
        plain = ort.SessionOptions()
        plain.log_severity_level = 3
        default = ort.InferenceSession(_qdq_matmul(), plain, providers=["CPUExecutionProvider"])
        assert default.run(None, {"x": x})[0][0, 0] == 32 * 32767


@pytest.mark.parametrize("saturate", [True, False])
def test_the_runtime_asks_for_exact_kernels_only_where_int8_pairs_saturate(monkeypatch, saturate):
    """ONNX Runtime applies the option on every x86 CPU with AVX2; with VNNI its u8 x s8 kernels are exact
    and faster, so the runtime asks only where they saturate."""
    from mmedge.runtime.backends import ort as ort_backend

    monkeypatch.setattr(ort_backend, "int8_pairs_saturate", lambda: saturate)
    try:
        value = session_options().get_session_config_entry(ort_backend.EXACT_INT8_OPTION)
    except Exception:  # noqa: BLE001 - onnxruntime raises for a key that was never set
        value = None
    assert value == ("1" if saturate else None)


@pytest.mark.parametrize("machine,flags,saturate", [
    ("x86_64", {"avx2", "fma"}, True), ("x86_64", {"avx2", "avx512_vnni"}, False), ("AMD64", {"avx_vnni"}, False),
    ("x86_64", None, True), ("aarch64", {"asimd", "asimddp"}, False), ("arm64", None, False)])
def test_int8_pairs_saturate_on_x86_cpus_without_vnni(monkeypatch, machine, flags, saturate):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(int8_kernels, "cpu_flags", lambda: None if flags is None else frozenset(flags))
    assert int8_kernels.int8_pairs_saturate() is saturate


def test_this_cpus_flags_are_read():
    from mmedge.runtime.cpu import cpu_flags

    flags = cpu_flags()
    if platform.system() == "Linux":
        assert flags and ("avx2" in flags or "asimd" in flags or "fpu" in flags)


@pytest.fixture
def quantized_graph(tmp_path):
    pytest.importorskip("openvino", reason="the OpenVINO backend needs pip install 'mmedge[openvino]'")
    path = tmp_path / "qdq_matmul.onnx"
    path.write_bytes(_qdq_matmul())
    return path


def test_auto_and_mixed_keep_int8_graphs_off_openvino_where_its_kernels_saturate(bundle_path, tools, tmp_path,
                                                                                monkeypatch):
    """``OpenVINOLoader.missing`` (what ``auto`` and ``mixed``'s placements ask) refuses graphs export recorded
    Q/DQ in, on an x86 CPU without VNNI only; fp32 graphs stay placeable."""
    pytest.importorskip("openvino", reason="the OpenVINO backend needs pip install 'mmedge[openvino]'")
    from mmedge.runtime import Bundle
    from mmedge.runtime.backends import openvino
    from mmedge.runtime.backends.base import GraphRef

    def verified(m):
        for encoder in m["encoders"].values():
            for g in encoder["graphs"].values():
                g["backends"] = {"openvino": {"ok": True, "min_cosine": 1.0, "min_cosine_required": 0.95}}
    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, verified)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    with Bundle.open(folder) as bundle:
        fp32 = GraphRef.from_bundle(bundle, "encoder.image", "fp32")
    int8 = replace(fp32, entry=replace(fp32.entry, quantization={"tool": "nncf", "quantize_linear": 40}))
    graphs = {"fp32": fp32, "int8": int8}  # the same graph as export records an int8 one
    for saturate in (True, False):
        monkeypatch.setattr(openvino, "int8_pairs_saturate", lambda: saturate)
        assert openvino.OpenVINOLoader.missing([graphs["fp32"]], None) is None
        problem = openvino.OpenVINOLoader.missing([graphs["int8"]], None)
        assert (problem is not None and "saturate on this x86 CPU without VNNI" in problem
                and "encoder.image" in problem) if saturate else problem is None


def test_openvino_by_name_warns_that_its_int8_kernels_saturate_here(quantized_graph, monkeypatch):
    from mmedge.runtime.backends import openvino

    monkeypatch.setattr(openvino, "int8_pairs_saturate", lambda: True)
    with pytest.warns(int8_kernels.SaturatingInt8Warning, match="backend='ort' computes it exactly"):
        with openvino.OpenVINORunner(openvino.OpenVINOLoader(quantized_graph, threads=1)):
            pass
    monkeypatch.setattr(openvino, "int8_pairs_saturate", lambda: False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with openvino.OpenVINORunner(openvino.OpenVINOLoader(quantized_graph, threads=1)):
            pass
    assert not [w for w in seen if "saturate" in str(w.message)]


def test_the_cached_optimized_graph_stays_exact(tmp_path):
    """The optimized graph ONNX Runtime writes to the runtime's cache holds its exact-kernel rewrite: a
    second session, loading it with optimization off, gives the same exact products."""
    pytest.importorskip("onnx")
    from mmedge.runtime.backends.ort import OrtLoader, OrtRunner

    path, cache = tmp_path / "qdq_matmul.onnx", tmp_path / "cache" / "qdq_matmul.onnx"
    path.write_bytes(_qdq_matmul())
    x = np.full((1, K), 255.0, np.float32)
    for _ in range(2):  # writes the cache, then reads it
        with OrtRunner(OrtLoader(path, cache=cache)) as runner:
            np.testing.assert_array_equal(runner.infer({"x": x})["y"], 255 * 127 * K)
        assert cache.exists()


def _dq_read_twice() -> bytes:
    """BatchNormalization reading one s8 DequantizeLinear twice (scale and variance: equal tensors an exporter
    deduplicated), as ONNX Runtime's quantize_static writes for a small audio CNN."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([100], np.int8), "w"), numpy_helper.from_array(np.array(0.01, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"), numpy_helper.from_array(np.zeros(1, np.float32), "b")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"]),
             helper.make_node("BatchNormalization", ["x", "wd", "b", "b", "wd"], ["y"])]
    graph = helper.make_graph(nodes, "dq_read_twice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_graph_the_exact_int8_rewrite_fails_on_still_loads(monkeypatch):
    """ONNX Runtime 1.32 fails to initialize this graph with the option set ("Attempt to replace the existing
    tensor"); the runtime then leaves out the option's first rewrite, and the graph runs."""
    pytest.importorskip("onnx")
    from mmedge.runtime.backends import ort as ort_backend

    monkeypatch.setattr(ort_backend, "int8_pairs_saturate", lambda: True)
    session = create_session(_dq_read_twice())
    y = session.run(None, {"x": np.ones((1, 1, 2, 2), np.float32)})[0]
    np.testing.assert_allclose(y, 1.0 / np.sqrt(1.0 + 1e-5), rtol=1e-6)  # (x - 0) / sqrt(var + eps) * scale, scale = var = 1
