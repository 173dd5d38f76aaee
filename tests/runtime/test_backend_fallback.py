"""Honest backends: a GPU backend that ONNX Runtime quietly ran on the CPU is reported, or refused with
``strict=True`` (issue 11, "backends that lie"). Runs on a CPU machine: ONNX Runtime really falls back
when asked for the CUDA execution provider it does not have."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from mmedge.errors import BackendUnavailable
from mmedge.runtime import Session
from mmedge.runtime.backends.ort import OrtCudaLoader, OrtTensorRTLoader


@pytest.fixture
def pretend_gpu(monkeypatch):
    """Makes the GPU runners look available, as on a machine whose CUDA libraries then fail to load."""
    for cls in (OrtCudaLoader, OrtTensorRTLoader):
        monkeypatch.setattr(cls, "availability", classmethod(lambda cls: None))


@pytest.mark.parametrize("backend", ["ort-cuda", "ort-trt"])
def test_fallback_to_cpu_is_reported(bundle_path, pretend_gpu, backend, rng):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = Session(bundle_path, backend=backend, threads=1)
    with session:
        assert session.backend == "ort"
        assert backend in session.backend_reason and "CPUExecutionProvider" in session.backend_reason
        assert "strict=True" in session.backend_reason
        pred = session.predict(image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), text="seven")
        assert pred.backend == "ort"
    assert any("fell back" in str(w.message) for w in caught)


def test_fallback_is_refused_when_strict(bundle_path, pretend_gpu):
    with pytest.raises(BackendUnavailable, match=r"ort-cuda.*CPUExecutionProvider.*onnxruntime-gpu"):
        Session(bundle_path, backend="ort-cuda", threads=1, strict=True)


def test_strict_cpu_session_is_fine(bundle_path):
    with Session(bundle_path, backend="ort", threads=1, strict=True) as s:
        assert s.backend == "ort" and "fell back" not in s.backend_reason
