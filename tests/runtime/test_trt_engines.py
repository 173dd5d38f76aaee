"""The TensorRT engine cache without TensorRT: device keys, L4T releases, build records and their
checks, the messages on a mismatch, atomic writes, and where each backend keeps its engines.

No engine is built or run here (that needs a GPU: tests/e2e/test_tensorrt_gpu.py). Files named
``*.engine`` below are placeholder bytes for the record checks, which read only the record and
the file size; nothing ever deserializes them.
"""
from __future__ import annotations

import json
import os
from dataclasses import fields, replace
from pathlib import Path

import pytest

from mmedge.errors import BackendUnavailable, EngineMismatch
from mmedge.runtime.backends.base import GraphRef, LoadSettings
from mmedge.runtime.backends.ort import OrtCudaLoader, OrtLoader, OrtRunner, OrtTensorRTLoader
from mmedge.runtime.backends.trt import EngineLoader, TensorRTOptions
from mmedge.runtime.backends.trt_engines import (BuildRecord, DeviceIdentity, check_engine,
                                                 default_engine_root, engine_file, missing_engine_error,
                                                 ort_trt_cache_dir, parse_l4t_release, read_l4t_release,
                                                 read_record, rebuild_hint, record_file, record_problems,
                                                 write_engine)
from mmedge.runtime.bundle import Bundle

ORIN = DeviceIdentity("10.3.0", "Orin", "8.7", "36.3.0")
RTX = DeviceIdentity("10.13.3.9", "NVIDIA GeForce RTX 4090", "8.9")
SHA = "ab" * 32
HINT = "run `mmedge build b --precision fp16` on this device"


def _record(device: DeviceIdentity = ORIN, sha: str = SHA, size: int = 4) -> BuildRecord:
    return BuildRecord(device, "encoder.image", "fp16", "encoders/image.fp16.onnx", sha,
                       {"pixel_values": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [8, 3, 64, 64]}},
                       size, 12.5, 1 << 30, 3, "0.1.0")


def _engine(root: Path, device: DeviceIdentity = ORIN, **kw) -> Path:
    engine = engine_file(root, device.key, "encoders/image.fp16.onnx")
    write_engine(engine, b"\0" * kw.pop("size", 4), _record(device, **kw))
    return engine


def test_device_keys():
    assert ORIN.key == "trt10.3.0_orin_sm87_l4t36.3.0"
    assert RTX.key == "trt10.13.3.9_nvidia-geforce-rtx-4090_sm89"
    assert DeviceIdentity("11.4.0.106", "NVIDIA H200", "9.0").key == "trt11.4.0.106_nvidia-h200_sm90"
    assert "L4T 36.3.0" in ORIN.describe() and "compute capability 8.7" in ORIN.describe()


@pytest.mark.parametrize("text, release", [
    ("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 2024", "36.3.0"),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", "35.4.1"),
    ("not a tegra release file", None),
])
def test_l4t_release(tmp_path, text, release):
    assert parse_l4t_release(text) == release
    (tmp_path / "nv_tegra_release").write_text(text + "\n")
    assert read_l4t_release(tmp_path / "nv_tegra_release") == release
    assert read_l4t_release(tmp_path / "absent") is None


def test_engine_paths_and_default_roots(bundle_path, tmp_path):
    assert engine_file(Path("/b/engines"), ORIN.key, "heads/concat.int8-trt.onnx") == \
        Path("/b/engines/trt10.3.0_orin_sm87_l4t36.3.0/heads/concat.int8-trt.engine")
    assert record_file(Path("x/heads/concat.fp16.engine")) == Path("x/heads/concat.fp16.engine.json")
    assert default_engine_root(bundle_path) == bundle_path / "engines"
    archive = tmp_path / "model.mmedge"
    archive.write_bytes(b"PK")
    assert default_engine_root(archive) == tmp_path / "model.mmedge.engines"
    assert rebuild_hint("b", "fp16") == HINT + " (or open the Session with auto_build=True)"
    assert "--engine-dir /elsewhere" in rebuild_hint(bundle_path, "fp16", Path("/elsewhere"))
    assert "--engine-dir" not in rebuild_hint(bundle_path, "fp16", bundle_path / "engines")


def test_record_round_trip_and_fit(tmp_path):
    engine = _engine(tmp_path)
    on_disk = json.loads(record_file(engine).read_text())
    assert on_disk["format"] == "mmedge.engine-record/1" and on_disk["tensorrt"] == "10.3.0"
    assert on_disk["source_sha256"] == SHA and on_disk["engine_bytes"] == 4 and on_disk["l4t"] == "36.3.0"
    record = check_engine(engine, ORIN, source_sha256=SHA, hint=HINT)
    assert record == _record()


def test_mismatch_names_exactly_what_differs(tmp_path):
    engine = _engine(tmp_path)
    here = DeviceIdentity("10.3.0", "Orin", "8.7", "36.4.0")  # same GPU and TensorRT, newer JetPack
    assert record_problems(read_record(engine, hint=HINT), here, source_sha256=SHA) == \
        ["l4t: engine built for '36.3.0', this device has '36.4.0'"]
    with pytest.raises(EngineMismatch) as err:
        check_engine(engine, RTX, source_sha256="cd" * 32, hint=HINT)
    msg = str(err.value)
    for part in ("tensorrt: engine built for '10.3.0', this device has '10.13.3.9'", "gpu: engine built for 'Orin'",
                 "compute_capability: engine built for '8.7', this device has '8.9'", "l4t", "re-exported",
                 HINT):
        assert part in msg, part


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    (json.dumps({"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}), "no source_sha256"),
    (json.dumps({"tensorrt": "10.3.0", "source_sha256": SHA}), "incomplete or malformed"),
    (json.dumps({**json.loads(_record().to_json()), "engine_bytes": "many"}), "incomplete or malformed"),
])
def test_malformed_records_are_engine_mismatch(tmp_path, content, match):
    engine = _engine(tmp_path)
    record_file(engine).write_text(content)
    with pytest.raises(EngineMismatch, match=match) as err:
        check_engine(engine, ORIN, source_sha256=SHA, hint=HINT)
    assert HINT in str(err.value)


def test_engine_without_record_or_torn_pair_is_refused(tmp_path):
    engine = _engine(tmp_path)
    record_file(engine).unlink()
    with pytest.raises(EngineMismatch, match="no build record"):
        check_engine(engine, ORIN, source_sha256=SHA, hint=HINT)
    engine = _engine(tmp_path)
    engine.write_bytes(b"\0" * 7)  # an engine replaced without its record
    with pytest.raises(EngineMismatch, match="7 bytes, the record says 4"):
        check_engine(engine, ORIN, source_sha256=SHA, hint=HINT)


def test_missing_engine_error_points_at_the_other_devices(tmp_path):
    err = missing_engine_error(tmp_path, RTX, "encoders/image.fp16.onnx", hint=HINT)
    assert isinstance(err, BackendUnavailable) and "no TensorRT engine" in str(err) and HINT in str(err)
    _engine(tmp_path, ORIN)
    err = missing_engine_error(tmp_path, RTX, "encoders/image.fp16.onnx", hint=HINT)
    assert isinstance(err, EngineMismatch)
    msg = str(err)
    assert ORIN.key in msg and RTX.key in msg and "this device has '10.13.3.9'" in msg and HINT in msg


def test_interrupted_rebuild_leaves_no_engine_that_looks_valid(tmp_path, monkeypatch):
    engine = _engine(tmp_path, sha="cd" * 32)  # built from an older graph
    real_replace = os.replace

    def crash_on_engine(src, dst):
        if Path(dst) == engine:
            raise KeyboardInterrupt  # the build is killed while the new engine is moved into place
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_engine)
    with pytest.raises(KeyboardInterrupt):
        write_engine(engine, b"\1" * 4, _record())
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(EngineMismatch, match="no build record"):
        check_engine(engine, ORIN, source_sha256=SHA, hint=HINT)
    assert sorted(p.name for p in engine.parent.iterdir()) == ["image.fp16.engine"]


def _graph(bundle_path: Path, component: str = "head.concat", disabled: tuple[str, ...] = ()) -> GraphRef:
    """A graph of the fixture bundle whose manifest entry turns ``disabled`` optimizers off."""
    with Bundle.open(bundle_path) as bundle:
        ref = GraphRef.from_bundle(bundle, component, "fp32")
    return replace(ref, entry=replace(ref.entry, ort_disabled_optimizers=disabled), read=None)


def test_ort_gpu_loaders_point_caches_at_the_device_folder(bundle_path, tmp_path):
    settings = LoadSettings(bundle_path, "int8-fp16-trt", tmp_path / "engines", threads=2, cuda_graph=True)
    graph = _graph(bundle_path, disabled=("WeightBiasQuantization",))
    loader = OrtTensorRTLoader.for_session(settings)(graph)
    options = loader.provider_options["TensorrtExecutionProvider"]
    cache = ort_trt_cache_dir(tmp_path / "engines")  # no cuda-python here: the GPU part is unidentified
    assert options == {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                       "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
                       # the head's profile from the manifest (issue 20 item 6); an fp32 graph: no fp16 flag
                       "trt_profile_min_shapes": "image_pooled:1x1280,text_pooled:1x384",
                       "trt_profile_opt_shapes": "image_pooled:1x1280,text_pooled:1x384",
                       "trt_profile_max_shapes": "image_pooled:8x1280,text_pooled:8x384"}
    assert cache.parent.parent == tmp_path / "engines" and cache.name == "ort-trt"
    assert cache.is_dir()  # created with its parents before ONNX Runtime sees it (issue 20 item 1)
    assert loader.disabled_optimizers == ("WeightBiasQuantization",) and loader.threads == 2
    for cls in (OrtCudaLoader, OrtLoader):
        other = cls.for_session(settings)(graph)
        assert other.provider_options == {} and other.disabled_optimizers == ("WeightBiasQuantization",)
    # TensorRT's own options (engine folder, CUDA graphs) reach no ONNX Runtime loader
    # (``cache``: ONNX Runtime's own optimized-graph cache entry, ``runtime.backends.ort_cache``)
    assert {f.name for f in fields(OrtLoader)} == {"path", "threads", "disabled_optimizers", "provider_options", "read",
                                                   "cache"}
    keyed = ort_trt_cache_dir(Path("/e"), gpu=("Orin", "8.7"), ort_version="1.22.0", l4t_file=tmp_path / "none")
    assert keyed == Path("/e/ort1.22.0_orin_sm87/ort-trt")


def test_ort_trt_runner_passes_provider_option_tuples(bundle_path, tmp_path, monkeypatch):
    """The TensorRT EP gets its options in ONNX Runtime's (name, options) form; the session is then
    opened on the CPU provider (no TensorRT EP here), with the graph's optimizer switches."""
    from mmedge.runtime.backends import ort as ort_backend

    seen = {}
    real = ort_backend.create_session

    def spy(graph, *, threads=None, providers=("CPUExecutionProvider",), disabled_optimizers=(), **cache):
        seen.update(providers=list(providers), disabled=tuple(disabled_optimizers), cache=cache)
        return real(graph, threads=threads, providers=["CPUExecutionProvider"], disabled_optimizers=disabled_optimizers,
                    **cache)

    monkeypatch.setattr(ort_backend, "create_session", spy)
    settings = LoadSettings(bundle_path, "fp32", tmp_path / "engines")
    graph = _graph(bundle_path, disabled=("WeightBiasQuantization",))
    with OrtRunner(OrtTensorRTLoader.for_session(settings)(graph)):
        pass
    trt_ep, *rest = seen["providers"]
    assert trt_ep[0] == "TensorrtExecutionProvider" and trt_ep[1]["trt_engine_cache_enable"] is True
    assert rest == ["CUDAExecutionProvider", "CPUExecutionProvider"] and seen["disabled"] == ("WeightBiasQuantization",)
    assert not seen["cache"].get("save_optimized")  # an optimized graph is CPU-specific: no cache for GPU providers


def test_tensorrt_options_come_from_the_session_settings(bundle_path, tmp_path):
    """The TensorRT loader takes the engine folder, CUDA graphs and the rebuild command; without
    built engines (or without graphs to look for) the backend says what to run."""
    settings = LoadSettings(bundle_path, "fp16", tmp_path / "e", threads=3, cuda_graph=True)
    options = TensorRTOptions.from_settings(settings)
    assert options == TensorRTOptions(tmp_path / "e", True, rebuild_hint(bundle_path, "fp16", tmp_path / "e"))
    assert f"--engine-dir {tmp_path / 'e'}" in options.hint
    no_engines = EngineLoader.missing([], settings)
    assert "run `mmedge build`" in no_engines and EngineLoader.missing([_graph(bundle_path)], None) == no_engines
    if EngineLoader.availability() is not None:  # no TensorRT here: loading says how to install it
        with pytest.raises(BackendUnavailable, match="tensorrt"):
            EngineLoader(tmp_path / "x.engine")()
