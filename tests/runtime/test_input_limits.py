"""Inputs at ``Session.predict`` / ``Session.stream``: silent wrong answers refused, limits a user can
raise, and a typed error naming the argument for every bad input (issue 11)."""
from __future__ import annotations

import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mmedge.errors import BundleError, ConfigError, InputError
from mmedge.runtime import Bundle, Session
from mmedge.runtime.audio import load_audio, resample
from mmedge.runtime.limits import Limits


@pytest.fixture
def image(rng):
    return rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- silent wrong answers


def test_multichannel_audio_needs_an_explicit_layout(session, image, rng):
    clips = (rng.standard_normal((3, 16000)) * 0.1).astype(np.float32)
    with pytest.raises(InputError, match="audio_layout") as err:
        session.predict(image=image, text="seven", audio=clips, audio_rate=16000)
    assert "list of 1-D" in str(err.value)  # says how to pass 3 clips
    mixed = session.predict(image=image, text="seven", audio=clips, audio_rate=16000, audio_layout="channels_first")
    mono = session.predict(image=image, text="seven", audio=clips.mean(axis=0), audio_rate=16000)
    np.testing.assert_allclose(mixed.probabilities, mono.probabilities, atol=1e-6)
    last = session.predict(image=image, text="seven", audio=clips.T.copy(), audio_rate=16000, audio_layout="channels_last")
    np.testing.assert_allclose(last.probabilities, mono.probabilities, atol=1e-6)
    with pytest.raises(InputError, match="audio_layout"):
        session.predict(image=image, text="seven", audio=clips, audio_rate=16000, audio_layout="planar")


def test_layout_is_explicit_in_load_audio():
    stereo = np.stack([np.ones(100), np.zeros(100)], axis=1).astype(np.float32)  # (N, 2)
    with pytest.raises(InputError, match="layout"):
        load_audio(stereo, sample_rate=8000)
    np.testing.assert_allclose(load_audio(stereo, sample_rate=8000, layout="channels_last")[0], np.full(100, 0.5))
    np.testing.assert_allclose(load_audio(stereo.T, sample_rate=8000, layout="channels_first")[0], np.full(100, 0.5))
    mono_2d = np.ones((100, 1), np.float32)  # a single channel is not ambiguous
    assert load_audio(mono_2d, sample_rate=8000)[0].shape == (100,)


def test_float_audio_in_integer_scale_is_refused(session, image):
    loud = np.full(16000, 30000.0, np.float32)
    with pytest.raises(InputError, match=r"audio\[0\].*int16"):
        session.predict(image=image, text="seven", audio=loud, audio_rate=16000)


def test_non_finite_logits_are_an_error_not_a_label(session, image, monkeypatch):
    runner = session._runners["head.concat"]
    real = runner._infer
    monkeypatch.setattr(runner, "_infer", lambda feed: {k: v * np.nan for k, v in real(feed).items()})
    with pytest.raises(BundleError, match="NaN"):
        session.predict(image=image, text="seven")


def test_logits_of_another_class_count_are_an_error_at_run(session, image, monkeypatch):
    runner = session._runners["head.concat"]
    real = runner._infer
    monkeypatch.setattr(runner, "_infer", lambda feed: {k: v[:, :4] for k, v in real(feed).items()})
    with pytest.raises(BundleError, match=r"head.concat gave logits of shape \[1, 4\].*10 labels"):
        session.predict(image=image, text="seven")


# ----------------------------------------------------------------------------- limits


def test_decompression_bomb_header_is_refused_before_decoding(session):
    side = 100_000  # 10 gigapixels declared in 33 bytes
    bomb = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + side.to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00" + bytes(8)
    with pytest.raises(InputError, match=r"image\[0\].*max_image_pixels"):
        session.predict(image=bomb, text="seven")


def test_huge_text_is_refused_fast_and_not_cached(session, image):
    before = session.text_cache_info().currsize
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"text\[0\].*10000000 characters.*max_text_chars"):
        session.predict(image=image, text="a" * 10_000_000)
    assert time.perf_counter() - start < 1.0
    assert session.text_cache_info().currsize == before


def test_limits_can_be_raised(bundle_path, image):
    text = "seven " * 2000  # 12000 characters
    with Session(bundle_path, threads=1, limits=Limits(max_text_chars=20_000, max_batch=2)) as s:
        assert s.predict(image=image, text=text).labels
        with pytest.raises(InputError, match="max_batch"):
            s.predict(image=[image] * 3, text=["a", "b", "c"])


def test_lone_surrogate_text_is_an_input_error(session, image):
    with pytest.raises(InputError, match=r"text\[1\].*(surrogate|Unicode)"):
        session.predict(image=[image, image], text=["ok", "caf\udce9"])


@pytest.mark.parametrize("rate", [10**9, 50, 0, -16000, 16000.5, True, "16000"])
def test_bad_audio_rate_is_refused_fast(session, image, rate):
    start = time.perf_counter()
    with pytest.raises(InputError, match="audio_rate"):
        session.predict(image=image, text="seven", audio=np.zeros(16000, np.float32), audio_rate=rate)
    assert time.perf_counter() - start < 1.0


def test_long_audio_is_refused(bundle_path, image):
    with Session(bundle_path, threads=1, limits=Limits(max_audio_seconds=2.0)) as s:
        with pytest.raises(InputError, match=r"audio\[0\].*max_audio_seconds"):
            s.predict(image=image, text="seven", audio=np.zeros(3 * 16000, np.float32), audio_rate=16000)


def test_resampling_memory_is_bounded():
    wave = np.zeros(19_1999, np.float32)
    tracemalloc.start()
    try:
        resample(wave, 191_999, 16000)  # coprime rates: the worst polyphase table
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 * 2**20, f"resampling peaked at {peak / 2**20:.0f} MiB"


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_zip_limits(bundle_zip, tmp_path):
    with pytest.raises(BundleError, match="max_zip_bytes"):
        Bundle.open(bundle_zip, limits=Limits(max_zip_bytes=1_000_000))
    many = _zip(tmp_path / "many.mmedge", {f"f{i}.txt": b"x" for i in range(20)})
    with pytest.raises(BundleError, match="max_zip_members"):
        Bundle.open(many, limits=Limits(max_zip_members=10))
    bomb = tmp_path / "bomb.mmedge"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", b" " * (64 * 2**20))
    with pytest.raises(BundleError, match="max_zip_bytes"):
        Bundle.open(bomb, limits=Limits(max_zip_bytes=32 * 2**20))


def test_bad_limits_are_config_errors():
    for bad in (dict(max_text_chars=0), dict(max_batch=-1), dict(max_audio_seconds=float("nan")),
                dict(min_audio_rate=8000, max_audio_rate=4000), dict(max_zip_bytes=True)):
        with pytest.raises(ConfigError):
            Limits(**bad)


# ----------------------------------------------------------------------------- every bad input is typed


BAD_PREDICT = [
    (dict(image=np.zeros((0, 4, 3), np.uint8), text="a"), "image"),
    (dict(image=np.zeros((8, 8, 3), np.int64), text="a"), "image"),
    (dict(image=np.full((8, 8, 3), np.nan, np.float32), text="a"), "image"),
    (dict(image=np.zeros((8, 8, 3), object), text="a"), "image"),
    (dict(image=np.zeros((2, 2, 8, 8, 3), np.uint8), text="a"), "image"),
    (dict(image=b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, text="a"), "image"),
    (dict(image=[None], text="a"), "image[0]"),
    (dict(image=[], text="a"), "image"),
    (dict(image=3.5, text="a"), "image"),
    (dict(image="/nonexistent.png", text="a"), "image"),
    (dict(image=np.zeros((8, 8, 3), np.uint8), text=7), "text"),
    (dict(image=np.zeros((8, 8, 3), np.uint8), text=[b"bytes"]), "text[0]"),
    (dict(image=np.zeros((8, 8, 3), np.uint8), text=" "), "text[0]"),
    (dict(image=np.zeros((8, 8, 3), np.uint8), text="a", image_color_order="rgb"), "image_color_order"),
    (dict(image=np.zeros((8, 8, 3), np.uint8), text="a", audio=np.zeros(10, np.complex64), audio_rate=16000), "audio"),
    (dict(image=np.zeros((8, 8, 3), np.uint8), text="a", audio=np.zeros(0, np.float32), audio_rate=16000), "audio"),
    (dict(image=np.zeros((8, 8, 3), np.uint8), text="a", audio=np.full(10, np.inf, np.float32), audio_rate=16000),
     "audio"),
    (dict(image=np.zeros((8, 8, 3), np.uint8), text="a", audio=np.zeros(10, np.float32)), "audio_rate"),
    (dict(image=np.zeros((8, 8, 3), np.uint8), text="a", audio=[[0.0, 0.1]], audio_rate=16000), "audio[0]"),
    (dict(image=[np.zeros((8, 8, 3), np.uint8)] * 2, text="a"), "batch"),
]


@pytest.mark.parametrize("kwargs, name", BAD_PREDICT, ids=range(len(BAD_PREDICT)))
def test_bad_predict_inputs_are_typed_and_named(session, kwargs, name):
    with pytest.raises(InputError) as err:
        session.predict(**kwargs)
    assert name in str(err.value)


@pytest.mark.parametrize("kwargs, name", [
    (dict(source=None), "source"), (dict(source=-1), "source"), (dict(source=True), "source"),
    (dict(source="video.avi", text=5), "text"), (dict(source="video.avi", text=["ok", "caf\udce9"]), "text[1]"),
    (dict(source="video.avi", every=0), "every"), (dict(source="video.avi", max_frames=1.5), "max_frames"),
    (dict(source="/nonexistent/video.avi", text="seven"), "source"),
])
def test_bad_stream_arguments_are_typed_and_raised_at_the_call(session, tmp_path, kwargs, name):
    if kwargs.get("source") == "video.avi":
        kwargs["source"] = _video(tmp_path / "video.avi", frames=2)
    with pytest.raises(InputError) as err:
        session.stream(**kwargs)
    assert name in str(err.value)


def test_stream_needs_the_modalities_the_bundle_requires(session, tmp_path):
    with pytest.raises(InputError, match="text"):
        session.stream(_video(tmp_path / "video.avi", frames=2))


def _video(path: Path, *, frames: int) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path
