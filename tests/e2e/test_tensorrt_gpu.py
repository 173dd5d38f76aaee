"""``mmedge build`` and the TensorRT backend for real: needs an NVIDIA GPU, TensorRT 10+ and
cuda-python (skipped elsewhere; CPU machines cover the pure logic in tests/export/test_engine_plan.py,
tests/runtime/test_trt_engines.py and the API check in tests/export/test_trt_api.py).

The fixture bundle (real encoders) gets an fp16 precision from the fp16 policy; engines are built
strongly typed into a temporary engine root and compared with ONNX Runtime CPU on the same inputs.
Making that bundle needs the export extras (torch, onnx, NNCF...): where TensorRT is present but
they are not (a Jetson), these tests skip and say so.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from mmedge.errors import EngineMismatch, InputError
from mmedge.runtime import Session
from mmedge.runtime.backends.trt import EngineLoader
from mmedge.runtime.backends.trt_cuda import CudaGraphWarning

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(EngineLoader.availability() is not None,
                                                  reason=f"TensorRT backend: {EngineLoader.availability()}")]
TEXTS = ["a photo of the digit seven", "three", "a handwritten zero"]
EXPORT_MODULES = ("torch", "onnx", "onnxscript", "nncf", "transformers")  # what the fixture bundle's export imports


def export_extras_problem(modules: tuple[str, ...] = EXPORT_MODULES) -> str | None:
    """Why the fixture bundle cannot be made here (export extras missing), or None."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"the GPU tests export their own bundle and need the export extras, missing here: {', '.join(missing)} "
            "(pip install 'mmedge[export]'; benchmarks/gpu_check.sh checks a device with an existing bundle)")


@pytest.fixture(scope="module")
def bundle(request, tmp_path_factory):
    """The fixture bundle plus an fp16 precision (fp16 policy), written as a new bundle."""
    problem = export_extras_problem()
    if problem:
        pytest.skip(problem)
    built = request.getfixturevalue("built")
    from mmedge.export.bundle_writer import write_bundle
    from mmedge.export.quantization import POLICIES

    work = tmp_path_factory.mktemp("fp16")
    manifest, files = json.loads((built.path / "manifest.json").read_text()), dict(built.files)
    manifest.pop("files")
    manifest["precisions"] = {"fp32": "ok", "fp16": "ok"}
    for owner in [*manifest["encoders"].values(), *manifest["members"]]:
        rel = owner["graphs"]["fp32"]["file"].replace(".fp32.", ".fp16.")
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        POLICIES["fp16"].build(built.path / owner["graphs"]["fp32"]["file"], work / rel)
        owner["graphs"]["fp16"] = {"file": rel, "status": "ok"}
        files[rel] = work / rel
    return write_bundle(tmp_path_factory.mktemp("bundles") / "gpu", manifest, files)


@pytest.fixture(scope="module")
def engines(bundle, tmp_path_factory):
    from mmedge.export.engine_build import build_engines
    from mmedge.export.engine_config import BuildConfig

    root = tmp_path_factory.mktemp("engines")
    report = build_engines(bundle, BuildConfig(precisions=("fp32", "fp16"), max_batch=4, engine_dir=root))
    return root, report


def _inputs(rng, n):
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)]
    waves = [(rng.standard_normal(16000) * 0.1).astype(np.float32) for _ in range(n)]
    return dict(image=images, text=TEXTS[:n], audio=waves, audio_rate=16000)


def test_build_writes_engines_records_and_timing_cache(engines):
    root, report = engines
    assert all(r.built and r.engine_bytes > 0 for r in report.results) and len(report.results) == 10
    key_dir = root / report.device.key
    assert report.timing_cache == key_dir / "timing.cache" and report.timing_cache.stat().st_size > 0
    record = json.loads((key_dir / "heads/concat.fp16.engine.json").read_text())
    assert record["tensorrt"] == report.device.tensorrt and record["source_sha256"]
    assert record["profiles"]["image_pooled"]["max"] == [4, 1280]


def test_second_build_finds_everything_up_to_date(bundle, engines):
    from mmedge.export.engine_build import build_engines
    from mmedge.export.engine_config import BuildConfig

    root, _ = engines
    again = build_engines(bundle, BuildConfig(precisions=("fp32", "fp16"), max_batch=4, engine_dir=root))
    assert not any(r.built for r in again.results)


@pytest.mark.parametrize("precision, atol", [("fp32", 1e-3), ("fp16", 2e-2)])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_matches_onnx_runtime(bundle, engines, precision, atol, cuda_graph):
    """Alternating shapes (1, 3, 1, 3, 3): each replay must run on the context its graph was captured
    with (issue 20 item 2); a failed capture would warn and fall back, which must not happen here."""
    root, _ = engines
    rng = np.random.default_rng(0)
    with Session(bundle, precision=precision, backend="tensorrt", engine_dir=root, cuda_graph=cuda_graph) as trt_s, \
            Session(bundle, precision="fp32", backend="ort") as ort_s, warnings.catch_warnings():
        warnings.simplefilter("error", CudaGraphWarning)
        for n in (1, 3, 1, 3, 3):
            given = _inputs(rng, n)
            got, want = trt_s.predict(**given), ort_s.predict(**given)
            np.testing.assert_allclose(got.probabilities, want.probabilities, atol=atol)
            assert got.backend == "tensorrt"
        if cuda_graph:
            image = trt_s._runners["encoder.image"]
            assert image.cuda_graph and len(image._graphs) == 2


def test_batch_beyond_the_profile_is_an_input_error(bundle, engines):
    root, _ = engines
    with Session(bundle, backend="tensorrt", engine_dir=root) as s, pytest.raises(InputError, match="--max-batch"):
        s.predict(**{k: (v * 2 if isinstance(v, list) else v) for k, v in _inputs(np.random.default_rng(1), 3).items()})


def test_mismatched_record_is_refused_then_rebuilt_with_auto_build(bundle, engines, tmp_path):
    root, report = engines
    mine = tmp_path / "engines"
    shutil.copytree(root, mine)
    record_path = mine / report.device.key / "heads/concat.fp32.engine.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "tensorrt": "0.0.0"}))
    with pytest.raises(EngineMismatch, match=r"tensorrt: engine built for '0\.0\.0'.*mmedge build"):
        Session(bundle, backend="tensorrt", engine_dir=mine)
    with Session(bundle, backend="tensorrt", engine_dir=mine, auto_build=True) as s:
        assert s.predict(**_inputs(np.random.default_rng(2), 1)).backend == "tensorrt"
    assert json.loads(record_path.read_text())["tensorrt"] == report.device.tensorrt


def test_engines_of_another_device_only(bundle, engines, tmp_path):
    root, report = engines
    other = tmp_path / "engines"
    shutil.copytree(root / report.device.key, other / "trt10.3.0_orin_sm87_l4t36.3.0")
    for record in (other / "trt10.3.0_orin_sm87_l4t36.3.0").rglob("*.engine.json"):
        record.write_text(json.dumps({**json.loads(record.read_text()), "tensorrt": "10.3.0", "gpu": "Orin",
                                      "compute_capability": "8.7", "l4t": "36.3.0"}))
    with pytest.raises(EngineMismatch, match="engines exist only for other devices: trt10.3.0_orin_sm87"):
        Session(bundle, backend="tensorrt", engine_dir=other)


def test_cli_build_prints_the_table(bundle, tmp_path):
    from mmedge.cli import app

    result = CliRunner().invoke(app, ["build", str(bundle), "--precision", "best", "--max-batch", "2",
                                      "--engine-dir", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "TensorRT engines: fp16" in result.output and "encoder.image" in result.output
