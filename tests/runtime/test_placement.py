"""Placement (``runtime/backends/placement.py``): under ``auto`` on the CPU, a graph whose entry names
another backend (export's ``mixed`` timed it fastest there) runs there; never under a named backend."""
from __future__ import annotations

import platform

import numpy as np
import pytest

from mmedge.runtime import Session

TEXT = "encoder.text"


def _placed_clone(bundle_path, tools, folder, *, backend="openvino", ok=True):
    """A clone of the fixture bundle whose text encoder entry names ``backend`` (checked ``ok`` there)."""
    def edit(m):
        graph = m["encoders"]["text"]["graphs"]["fp32"]
        graph["backend"] = backend
        graph["backends"] = {backend: {"ok": ok, "min_cosine": 1.0 if ok else 0.2, "min_cosine_required": 0.99999}}
    folder = tools.clone(bundle_path, folder)
    tools.edit_manifest(folder, edit)
    return folder


def _inputs(rng) -> dict:
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
    waves = [rng.standard_normal(16000).astype(np.float32) * 0.1 for _ in range(2)]
    return dict(image=images, text=["seven", "a photo of the digit four"], audio=waves, audio_rate=16000)


def test_auto_runs_a_graph_on_the_backend_export_chose_and_predicts_as_onnx_runtime(bundle_path, tools, tmp_path,
                                                                                    monkeypatch, rng):
    pytest.importorskip("openvino", reason="placing a graph on OpenVINO needs pip install 'mmedge[openvino]'")
    from mmedge.runtime.backends.openvino import OpenVINORunner

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    folder = _placed_clone(bundle_path, tools, tmp_path / "b")
    given = _inputs(rng)
    with Session(folder, backend="ort", threads=1) as named:  # a named backend is never overridden
        assert set(named.backends.values()) == {"ort"}
        want = named.predict(**given)
    with Session(folder, threads=1, engine_dir=tmp_path / "e") as auto:
        assert auto.backend == "ort" and auto.backends[TEXT] == "openvino"
        assert {b for c, b in auto.backends.items() if c != TEXT} == {"ort"}
        assert isinstance(auto._runners[TEXT], OpenVINORunner)
        assert f"{TEXT} on 'openvino' (export's mixed timed it fastest there)" in auto.backend_reason
        got = auto.predict(**given)
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-4)
    assert got.labels == want.labels


@pytest.mark.parametrize("case", ["unchecked", "arm", "unknown"])
def test_a_placement_this_machine_cannot_take_stays_on_onnx_runtime_and_says_why(bundle_path, tools, tmp_path,
                                                                                monkeypatch, case):
    if case != "unknown":
        pytest.importorskip("openvino", reason="needs pip install 'mmedge[openvino]'")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64" if case == "arm" else "x86_64")
    folder = _placed_clone(bundle_path, tools, tmp_path / "b", ok=case != "unchecked",
                           backend="no-such-backend" if case == "unknown" else "openvino")
    with Session(folder, threads=1, engine_dir=tmp_path / "e") as session:
        assert set(session.backends.values()) == {"ort"}
        reason = session.backend_reason
    assert f"{TEXT} stays on 'ort', not " in reason
    want = {"unchecked": "auto takes OpenVINO only for graphs export verified on it",
            "arm": "x86 CPUs only (this is aarch64)", "unknown": "no backend 'no-such-backend' is registered here"}
    assert want[case] in reason


def test_a_placed_backend_that_fails_to_load_leaves_the_graph_on_onnx_runtime(bundle_path, tools, tmp_path,
                                                                            monkeypatch):
    """A broken OpenVINO install (its loader raising a plain RuntimeError) must not break an auto Session."""
    pytest.importorskip("openvino", reason="needs pip install 'mmedge[openvino]'")
    from mmedge.runtime.backends.openvino import OpenVINOLoader

    def broken(self):
        raise RuntimeError("libopenvino.so: cannot open shared object file")

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(OpenVINOLoader, "__call__", broken)
    folder = _placed_clone(bundle_path, tools, tmp_path / "b")
    with Session(folder, threads=1, engine_dir=tmp_path / "e") as session:
        assert set(session.backends.values()) == {"ort"} and session.backend_choice.placed == {}
        assert f"{TEXT} back on 'ort': 'openvino' failed to load it (libopenvino.so" in session.backend_reason
        assert list(session.backends)[0] == "encoder.image"  # the runners keep the bundle's component order
