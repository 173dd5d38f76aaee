"""Tests for mmedge.runtime.Session on a real exported bundle (see conftest.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmedge.errors import BackendUnavailable, BundleError, ConfigError, InputError
from mmedge.runtime import Session, available_backends
from mmedge.runtime.audio import preprocess_audio, resample
from mmedge.runtime.preprocess import preprocess_images

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["a photo of the digit seven", "three", "a handwritten zero"]


def _images(rng, n=3):
    return [rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8) for i in range(n)]


def _waves(rng, n=3, rate=16000):
    return [(rng.standard_normal(rate) * 0.1).astype(np.float32) for _ in range(n)]


def torch_reference(model, tokenizer, images, texts, waves=None):
    """Ensemble and member probabilities of the PyTorch model (``MultimodalEnsemble.predict``, the
    one reference forward) on the runtime's preprocessing of the same raw inputs."""
    import torch

    spec = model.recipe
    arrays = {"pixel_values": preprocess_images(images, spec.image), **tokenizer(texts)}
    if waves is not None:
        arrays["mel"] = preprocess_audio(waves, spec.audio)
    return model.predict({k: torch.from_numpy(v) for k, v in arrays.items()})


# ----------------------------------------------------------------------------- correctness


def test_matches_pytorch_all_modalities(built, session, torch_ensemble, rng):
    images, waves = _images(rng), _waves(rng)
    pred = session.predict(image=images, text=TEXTS, audio=waves, audio_rate=16000)
    ref, ref_members = torch_reference(torch_ensemble(), built.tokenizer, images, TEXTS, waves)
    np.testing.assert_allclose(pred.probabilities, ref, atol=1e-4)
    for name, p in ref_members.items():
        np.testing.assert_allclose(pred.member_probabilities[name], p, atol=1e-4)
    assert pred.probabilities.shape == (3, 10) and pred.indices.tolist() == ref.argmax(1).tolist()
    assert pred.labels == [built.manifest["labels"][i] for i in ref.argmax(1)]
    assert pred.members == ("concat", "cross_attention") and pred.skipped_members == () and pred.note == ""
    # the fixture's graphs were not checked on OpenVINO (a hand-built bundle): auto runs ONNX Runtime's CPU
    # backend unless a GPU one is here
    assert pred.backend == session.backend in available_backends() and pred.precision == "fp32"
    assert not session.backend.startswith("openvino")
    for stage in ("preprocess.image", "encoder.image", "encoder.audio", "head.concat", "head.cross_attention",
                  "ensemble", "total"):
        assert pred.timings_ms[stage] >= 0


def test_optional_modality_missing_runs_the_members_that_can(built, session, torch_ensemble, rng):
    images = _images(rng, 2)
    pred = session.predict(image=images, text=TEXTS[:2])
    ref, ref_members = torch_reference(torch_ensemble(["concat"]), built.tokenizer, images, TEXTS[:2])
    assert pred.members == ("concat",) and pred.skipped_members == ("cross_attention",)
    assert "audio" in pred.note and "re-normalized" in pred.note
    np.testing.assert_allclose(pred.probabilities, ref, atol=1e-4)
    np.testing.assert_allclose(pred.probabilities, ref_members["concat"], atol=1e-5)
    assert "encoder.audio" not in pred.timings_ms


def test_batch_equals_single_calls(session, rng):
    images, waves = _images(rng), _waves(rng)
    batch = session.predict(image=images, text=TEXTS, audio=waves, audio_rate=16000)
    for i in range(3):
        one = session.predict(image=images[i], text=TEXTS[i], audio=waves[i], audio_rate=16000)
        np.testing.assert_allclose(one.probabilities[0], batch.probabilities[i], atol=1e-5)
        assert one.label == batch.labels[i]
        assert one.probability == pytest.approx(float(batch.probabilities[i].max()), abs=1e-5)
    with pytest.raises(ValueError, match="batch of 3"):
        batch.label
    stacked = session.predict(image=np.stack([images[0]] * 2), text=[TEXTS[0]] * 2)
    assert stacked.probabilities.shape == (2, 10)


def test_bgr_frames_and_rgb_arrays_agree(session, rng):
    rgb = _images(rng, 1)[0]
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    a = session.predict(image=rgb, text="seven")
    b = session.predict(image=bgr, text="seven", image_color_order="BGR")
    c = session.predict(image=bgr, text="seven")  # wrong order given: a different image
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert not np.allclose(a.probabilities, c.probabilities, atol=1e-6)


def test_bytes_and_path_images(session, rng, tmp_path):
    rgb = _images(rng, 1)[0]
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path = tmp_path / "im.png"
    path.write_bytes(png.tobytes())
    ref = session.predict(image=rgb, text="seven").probabilities
    for source in (png.tobytes(), str(path), path):
        np.testing.assert_array_equal(session.predict(image=source, text="seven").probabilities, ref)
    mixed = session.predict(image=[png.tobytes(), path, rgb], text=["seven"] * 3).probabilities
    np.testing.assert_array_equal(mixed, np.repeat(ref, 3, axis=0))


@pytest.mark.parametrize("rate", [8000, 44100])
def test_int16_audio_at_other_rates_is_resampled(session, rng, rate):
    pcm = (rng.standard_normal(rate) * 3000).astype(np.int16)
    image = _images(rng, 1)[0]
    pred = session.predict(image=image, text="seven", audio=pcm, audio_rate=rate)
    wave16k = resample(pcm.astype(np.float32) / 32768.0, rate, 16000)
    ref = session.predict(image=image, text="seven", audio=wave16k, audio_rate=16000)
    np.testing.assert_allclose(pred.probabilities, ref.probabilities, atol=1e-6)
    assert pred.members == ("concat", "cross_attention")


def test_audio_file(session, rng, tmp_path):
    soundfile = pytest.importorskip("soundfile")
    wave = (rng.standard_normal(8000) * 0.1).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", wave, 8000, subtype="FLOAT")
    image = _images(rng, 1)[0]
    a = session.predict(image=image, text="seven", audio=str(tmp_path / "a.wav"))
    b = session.predict(image=image, text="seven", audio=wave, audio_rate=8000)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_thread_safety(session, rng):
    images, waves = _images(rng), _waves(rng)
    expected = session.predict(image=images, text=TEXTS, audio=waves, audio_rate=16000).probabilities
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(session.predict(image=images, text=TEXTS, audio=waves, audio_rate=16000).probabilities)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    for r in results:
        np.testing.assert_array_equal(r, expected)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, match", [
    ({"image": np.zeros((8, 8, 5), np.uint8), "text": "x"}, "shape"),
    ({"image": np.zeros((8, 8, 3), np.int32), "text": "x"}, "dtype"),
    ({"image": b"", "text": "x"}, "empty"),
    ({"image": b"definitely not a png", "text": "x"}, "cannot decode"),
    ({"image": "/no/such/image.png", "text": "x"}, "not found"),
    ({"image": [], "text": []}, "empty list"),
    ({"image": np.zeros((8, 8, 3), np.uint8), "text": ""}, "empty"),
    ({"image": np.zeros((8, 8, 3), np.uint8), "text": ["ok", 3]}, "not a str"),
    ({"image": np.zeros((8, 8, 3), np.uint8), "text": "x", "audio": np.array([0.0, np.nan]), "audio_rate": 16000},
     "NaN or Inf"),
    ({"image": np.zeros((8, 8, 3), np.uint8), "text": "x", "audio": np.full(100, np.inf, np.float32),
      "audio_rate": 16000}, "NaN or Inf"),
    ({"image": np.zeros((8, 8, 3), np.uint8), "text": "x", "audio": np.zeros(100, np.float32)}, "audio_rate"),
    ({"image": np.zeros((8, 8, 3), np.uint8)}, "needs \\['text'\\]"),
    ({"text": "x"}, "needs \\['image'\\]"),
    ({}, "at least one input"),
    ({"image": [np.zeros((8, 8, 3), np.uint8)] * 2, "text": "x"}, "batch sizes differ"),
    ({"image": np.zeros((8, 8, 3), np.uint8), "text": "x", "image_color_order": "BRG"}, "color_order"),
])
def test_bad_inputs_raise_input_error(session, kwargs, match):
    with pytest.raises(InputError, match=match):
        session.predict(**kwargs)


@pytest.fixture(scope="module")
def image_text_bundle(bundle_path, tmp_path_factory, tools):
    """The fixture bundle cut down to image + text (one member): a bundle without audio."""
    folder = tools.clone(bundle_path, tmp_path_factory.mktemp("it") / "b")

    def cut(m):
        m.update(modalities=["image", "text"], optional_modalities=[], members=m["members"][:1])
        m["ensemble"].update(weights=[0.6], temperatures=[1.3])
        del m["encoders"]["audio"], m["inputs"]["audio"]
    tools.edit_manifest(folder, cut)
    return folder


def test_modality_the_bundle_lacks(image_text_bundle, rng):
    with Session(image_text_bundle) as s:
        with pytest.raises(InputError, match=r"takes \['image', 'text'\]; it has no \['audio'\]"):
            s.predict(image=_images(rng, 1)[0], text="x", audio=np.zeros(100, np.float32), audio_rate=16000)
        assert s.predict(image=_images(rng, 1)[0], text="x").members == ("concat",)


def test_required_modality_without_optional_declared(bundle_path, tmp_path, rng, tools):
    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m.pop("optional_modalities"))
    with Session(folder) as s, pytest.raises(InputError, match=r"needs \['audio'\]"):
        s.predict(image=_images(rng, 1)[0], text="x")


def test_unavailable_backend(bundle_path):
    if "tensorrt" not in available_backends():
        with pytest.raises(BackendUnavailable) as err:
            Session(bundle_path, backend="tensorrt")
        msg = str(err.value)
        assert "'tensorrt'" in msg and "ort" in msg and "pip install" in msg
    with pytest.raises(BackendUnavailable, match="unknown backend 'nope'; valid"):
        Session(bundle_path, backend="nope")


@pytest.mark.parametrize("precision, match", [("int8", "failed: not built"), ("fp64", "not in the bundle")])
def test_unavailable_precision(bundle_path, precision, match):
    with pytest.raises(BundleError, match=match) as err:
        Session(bundle_path, precision=precision)
    assert "['fp32']" in str(err.value)


def test_bad_session_config(bundle_path):
    with pytest.raises(ConfigError, match="threads"):
        Session(bundle_path, threads=0)
    with pytest.raises(ConfigError, match="text_cache_size"):
        Session(bundle_path, text_cache_size=-1)


def test_backend_is_reported(session):
    assert session.backend in available_backends()
    assert "auto" in session.backend_reason and session.backend in session.backend_reason


# ----------------------------------------------------------------------------- zip, video, torch-free


def test_zip_bundle_session_matches_folder(bundle_zip, session, rng):
    images = _images(rng, 2)
    with Session(bundle_zip, threads=2) as s:
        root = s.bundle.root
        pred = s.predict(image=images, text=TEXTS[:2])
    assert not root.exists()
    np.testing.assert_array_equal(pred.probabilities, session.predict(image=images, text=TEXTS[:2]).probabilities)


def _video(path: Path, rng, frames=5) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def test_stream_video_file(session, rng, tmp_path):
    video = _video(tmp_path / "clip.avi", rng)
    out = list(session.stream(video, text="seven", max_frames=3))
    assert len(out) == 3
    for frame, pred in out:
        assert frame.shape == (48, 64, 3)
        ref = session.predict(image=frame, text="seven", image_color_order="BGR")
        np.testing.assert_array_equal(pred.probabilities, ref.probabilities)
    assert len(list(session.stream(str(video), text=["seven", "three"], every=2))) == 3
    with pytest.raises(InputError, match="cannot open video source"):
        session.stream(tmp_path / "missing.avi", text="x")
    with pytest.raises(InputError, match="every"):
        session.stream(video, text="x", every=0)


def test_camera_app_runs_on_a_video_file(bundle_path, rng, tmp_path):
    video = _video(tmp_path / "clip.avi", rng)
    cmd = [sys.executable, str(REPO / "examples" / "camera_app.py"), "--bundle", str(bundle_path), "--source",
           str(video), "--text", "seven", "--max-frames", "3", "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("frame ")]
    assert len(lines) == 3 and all(" p=" in ln and " ms " in ln for ln in lines)
    bad = subprocess.run(cmd[:4] + ["--source", str(tmp_path / "none.avi"), "--text", "seven"], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "cannot open video source" in bad.stderr


TORCH_FREE = """
import sys, json
for name in ("torch", "onnx", "nncf"):
    sys.modules[name] = None
import numpy as np
import mmedge.runtime
from mmedge.runtime import Session
with Session(sys.argv[1], threads=1) as s:
    p = s.predict(image=np.full((32, 32, 3), 127, np.uint8), text="seven")
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "nncf") and sys.modules[m] is not None)
print(json.dumps({"probs": p.probabilities.tolist(), "bad": bad}))
"""


def test_runtime_runs_with_torch_onnx_nncf_blocked(bundle_path, session):
    res = subprocess.run([sys.executable, "-c", TORCH_FREE, str(bundle_path)], capture_output=True, text=True,
                         timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["bad"] == []
    ref = session.predict(image=np.full((32, 32, 3), 127, np.uint8), text="seven").probabilities
    np.testing.assert_allclose(np.array(out["probs"], np.float32), ref, atol=1e-6)


# ----------------------------------------------------------------------------- runners


def _head_feed(batch=2):
    return {"image_pooled": np.zeros((batch, 1280), np.float32), "text_pooled": np.ones((batch, 384), np.float32)}


def test_ort_runner_interface_and_feed_validation(bundle_path):
    from mmedge.runtime.backends import BACKENDS
    from mmedge.runtime.backends.ort import OrtLoader, OrtRunner

    assert set(BACKENDS) == {"tensorrt", "ort-trt", "ort-cuda", "openvino-gpu", "openvino-npu", "openvino", "ort"}
    assert BACKENDS["ort"].runner is OrtRunner
    runner = OrtRunner(OrtLoader(bundle_path / "heads/concat.fp32.onnx", threads=1))
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer(_head_feed())
    with runner:
        assert BACKENDS["ort"].loader is OrtLoader and runner.active_providers == ["CPUExecutionProvider"]
        assert runner.backend_fallback is None
        assert runner.input_names == ("image_pooled", "text_pooled") and runner.output_names == ("logits",)
        assert runner.infer(_head_feed(3))["logits"].shape == (3, 10)
        bad_feeds = [
            ({"image_pooled": _head_feed()["image_pooled"]}, r"missing \['text_pooled'\]"),
            ({**_head_feed(), "extra": np.zeros(1, np.float32)}, r"unexpected \['extra'\]"),
            ({**_head_feed(), "text_pooled": np.ones((2, 384))}, "must be float32, got float64"),
            ({**_head_feed(), "text_pooled": np.ones((2, 1, 384), np.float32)}, "rank 2"),
            ({**_head_feed(), "text_pooled": np.ones((2, 383), np.float32)}, "axis 1 must be 384"),
            ({**_head_feed(), "text_pooled": [[1.0]]}, "numpy array"),
        ]
        for feed, match in bad_feeds:
            with pytest.raises(InputError, match=match):
                runner.infer(feed)
    assert not runner.is_active


def test_resolve_backend_auto_and_named():
    from mmedge.runtime.backends import resolve_backend

    choice = resolve_backend("auto")
    assert choice.name == [b for b in available_backends() if b != "tensorrt"][0]
    assert choice.reason.startswith("auto")
    assert resolve_backend("ort").name == "ort"
    for name in ("ort-cuda", "ort-trt", "tensorrt"):
        if name not in available_backends():
            with pytest.raises(BackendUnavailable, match=f"backend '{name}' is not available here"):
                resolve_backend(name)


# TensorRT engines (built by mmedge build, loaded by EngineLoader, run by TensorRTRunner): tests/e2e/test_tensorrt_gpu.py
