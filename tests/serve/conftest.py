"""Serve tests: a real Triton server on loopback (PyTriton), in the serve environment.

``.ci/serve_tests.sh`` builds the fixture bundle and reference samples in the main
environment (``make_fixture.py``: ``bundle``, ``samples.npz`` and ``waveform-bundle``) and runs
these tests in a virtual environment of its own with ``MMEDGE_SERVE_FIXTURE`` pointing at them. Without that variable the shared fixture
bundle of ``tests/conftest.py`` is used (main environment, torch). Modules that need
PyTriton or tritonclient skip themselves where those are absent.
"""
from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import numpy as np
import pytest

FIXTURE_ENV = "MMEDGE_SERVE_FIXTURE"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _make_fixture():
    spec = importlib.util.spec_from_file_location("mmedge_serve_make_fixture", Path(__file__).with_name("make_fixture.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def serve_fixture(tmp_path_factory) -> Path | None:
    value = os.environ.get(FIXTURE_ENV)
    return Path(value) if value else None


@pytest.fixture(scope="session")
def bundle_path(serve_fixture, request) -> Path:
    """The fixture bundle: prebuilt (``MMEDGE_SERVE_FIXTURE``) or built here (needs torch)."""
    if serve_fixture is not None:
        return serve_fixture / "bundle"
    pytest.importorskip("torch", reason=f"set {FIXTURE_ENV} (see .ci/serve_tests.sh) or install torch")
    return request.getfixturevalue("built").path


@pytest.fixture(scope="session")
def samples(serve_fixture, tmp_path_factory) -> dict:
    """Rows of the reference ``digits-av`` test split: images (N,32,32,3), texts, audio (N,T), audio_rate."""
    if serve_fixture is not None:
        path = serve_fixture / "samples.npz"
    else:
        path = _make_fixture().write_samples(tmp_path_factory.mktemp("samples") / "samples.npz")
    data = np.load(path)
    return {"images": list(data["images"]), "texts": [str(t) for t in data["texts"]], "audio": list(data["audio"]),
            "audio_rate": int(data["audio_rate"]), "labels": data["labels"]}
