"""Exact 8-bit integer products on every CPU (``mmedge.runtime.int8_kernels``, the runtime's ONNX Runtime
options, OpenVINO's int8 graphs on x86 CPUs without VNNI)."""
from __future__ import annotations

import platform
import warnings

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
    assert session_options().get_session_config_entry("session.x64quantprecision") == "1"
    np.testing.assert_array_equal(create_session(_qdq_matmul()).run(None, {"x": x})[0], 255 * 127 * K)
    if int8_kernels.int8_pairs_saturate():  # ONNX Runtime's default here: the saturation the option avoids
        plain = ort.SessionOptions()
        plain.log_severity_level = 3
        default = ort.InferenceSession(_qdq_matmul(), plain, providers=["CPUExecutionProvider"])
        assert default.run(None, {"x": x})[0][0, 0] == 32 * 32767


@pytest.mark.parametrize("machine,flags,saturate", [
    ("x86_64", {"avx2", "fma"}, True), ("x86_64", {"avx2", "avx512_vnni"}, False), ("AMD64", {"avx_vnni"}, False),
    ("x86_64", None, True), ("aarch64", {"asimd", "asimddp"}, False), ("arm64", None, False)])
def test_int8_pairs_saturate_on_x86_cpus_without_vnni(monkeypatch, machine, flags, saturate):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(int8_kernels, "cpu_flags", lambda: None if flags is None else frozenset(flags))
    assert int8_kernels.int8_pairs_saturate() is saturate


def test_this_cpus_flags_are_read():
    flags = int8_kernels.cpu_flags()
    if platform.system() == "Linux":
        assert flags and ("avx2" in flags or "asimd" in flags or "fpu" in flags)


@pytest.fixture
def quantized_graph(tmp_path):
    pytest.importorskip("openvino", reason="the OpenVINO backend needs pip install 'mmedge[openvino]'")
    path = tmp_path / "qdq_matmul.onnx"
    path.write_bytes(_qdq_matmul())
    return path


def test_auto_runs_an_int8_graph_on_onnx_runtime_where_openvino_would_saturate(quantized_graph, monkeypatch):
    from mmedge.runtime.backends import openvino
    from mmedge.runtime.backends.fallback import BackendFallbackWarning
    from mmedge.runtime.backends.ort import OrtLoader, OrtRunner

    monkeypatch.setattr(openvino, "int8_pairs_saturate", lambda: True)

    def rescue():
        runner = OrtRunner(OrtLoader(quantized_graph))
        runner.activate()
        return runner
    x = np.full((1, K), 255.0, np.float32)
    with pytest.warns(BackendFallbackWarning, match="into int16 on this x86 CPU without VNNI"):
        runner = openvino.OpenVINORunner(openvino.OpenVINOLoader(quantized_graph, threads=1, rescue=rescue))
        runner.activate()
    assert runner.backend_fallback.runs_as == "ort" and "ONNX Runtime computes it exactly" in runner.backend_fallback.detail
    np.testing.assert_array_equal(runner.infer({"x": x})["y"], 255 * 127 * K)
    runner.deactivate()


def test_openvino_by_name_warns_that_its_int8_kernels_saturate_here(quantized_graph, monkeypatch):
    from mmedge.runtime.backends import openvino

    monkeypatch.setattr(openvino, "int8_pairs_saturate", lambda: True)
    with pytest.warns(UserWarning, match="use backend='ort' for this precision"):
        with openvino.OpenVINORunner(openvino.OpenVINOLoader(quantized_graph, threads=1)) as runner:
            assert runner.backend_fallback is None
    monkeypatch.setattr(openvino, "int8_pairs_saturate", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with openvino.OpenVINORunner(openvino.OpenVINOLoader(quantized_graph, threads=1)):
            pass


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
