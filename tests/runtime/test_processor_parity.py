"""Issue 17 item 2: the runtime preprocesses as each pretrained model's own processor does.

Tiny CLIP, SigLIP and CLAP folders (``tiny_pretrained``: the real processor and tokenizer classes, CLIP's,
SigLIP's and CLAP's real settings) against the numpy runtime on raw inputs: non-square photos, varied
texts, clips of several rates and lengths. Specs come from the folders (``<Spec>.from_hf``).
"""
from __future__ import annotations

import numpy as np
import pytest

from mmedge.hf_specs import hf_configs
from mmedge.runtime.audio import preprocess_audio, resample
from mmedge.runtime.image_resize import PIL_TOLERANCE
from mmedge.runtime.preprocess import TextTokenizer, preprocess_images
from mmedge.runtime.specs import AudioSpec, ImageSpec, TextSpec
from tiny_pretrained import CLAP_RATE, pretrained_folders  # noqa: F401  (a fixture)

pytest.importorskip("transformers")

# Measured here: the runtime's pixel tensors differ from CLIPImageProcessor's / SiglipImageProcessor's by
# at most this (float32 vs float64 normalisation; the resampled pixels are equal, Pillow's integer arithmetic).
MEASURED_PIXEL_DIFF = 4.8e-7
PIXEL_TOLERANCE = 1e-5  # what this test holds the runtime to; the bound is PIL_TOLERANCE (0.02)
AUDIO_RTOL = 1e-4  # relative, on CLAP's dB features (measured: 2.7e-6 at most)
PHOTO_SHAPES = [(96, 160), (160, 96), (41, 333), (333, 41), (32, 32), (31, 33), (480, 640), (7, 5), (1, 50)]


def _photo(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth gradient with noise and a few hard edges: resampling has something to do everywhere."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255.0 / max(w - 1, 1), yy * 255.0 / max(h - 1, 1), (xx + yy) % 64 * 4.0], axis=-1)
    noisy = base + rng.normal(0, 25, base.shape)
    noisy[h // 3:h // 2, w // 4:w // 2] = 255.0
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _processor(folder):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder)


@pytest.mark.parametrize("model", ["clip", "siglip", "clip_vision"])
def test_pixel_tensors_match_the_models_own_image_processor(pretrained_folders, model):
    spec = ImageSpec.from_hf(hf_configs(pretrained_folders[model]))
    processor = _processor(pretrained_folders[model])
    worst = 0.0
    for i, shape in enumerate(PHOTO_SHAPES):
        photo = _photo(shape, i)
        want = processor(images=photo, return_tensors="np", input_data_format="channels_last")["pixel_values"]
        got = preprocess_images([photo], spec)
        assert got.shape == want.shape, shape
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= PIXEL_TOLERANCE <= PIL_TOLERANCE, f"worst |runtime - {model} processor| = {worst:.3g}"


def test_the_clip_spec_is_shortest_edge_bicubic_centre_crop(pretrained_folders):
    spec = ImageSpec.from_hf(hf_configs(pretrained_folders["clip"]))
    assert (spec.resize, spec.interpolation, spec.size, spec.convert_rgb) == ("shortest_edge", "bicubic", 32, True)
    siglip = ImageSpec.from_hf(hf_configs(pretrained_folders["siglip"]))
    assert (siglip.resize, siglip.interpolation, siglip.mean) == ("squash", "bicubic", (0.5, 0.5, 0.5))


def test_the_runtime_differs_from_clip_when_it_squashes(pretrained_folders):
    """The parity above is the resize mode's doing: the first bundles' squash is far off on a 160x96 photo."""
    import dataclasses

    spec = ImageSpec.from_hf(hf_configs(pretrained_folders["clip"]))
    photo = _photo((96, 160), 0)
    want = _processor(pretrained_folders["clip"])(images=photo, return_tensors="np",
                                                  input_data_format="channels_last")["pixel_values"]
    squashed = preprocess_images([photo], dataclasses.replace(spec, resize="bilinear"))
    assert float(np.abs(squashed - want).max()) > 0.5


# -- text ------------------------------------------------------------------------------------

_WORDS = ["a", "photo", "of", "the", "cat", "dog", "RED", "Mug", "person", "café", "naïve", "straße", "東京",
          "タワー", "🙂", "don't", "it's", "e-mail", "3:45pm", "$5", "#tag", "Ελληνικά", "Русский", "العربية",
          "x", "supercalifragilistic", "CAPITALS", "MiXeD", "(brackets)", "[square]", "{curly}", "<angle>"]
_PUNCT = ["", "!", "?", ".", ",", "...", " —", ";", ":", "!!"]


def varied_texts(n: int = 240, seed: int = 0) -> list[str]:
    """``n`` texts: 1 to 60 words, punctuation, capitals, non-ASCII, doubled spaces, tabs, over-long ones."""
    rng = np.random.default_rng(seed)
    texts = []
    for i in range(n):
        count = int(rng.integers(1, 8)) if i % 5 else int(rng.integers(20, 60))  # every 5th is over-long
        words = [str(rng.choice(_WORDS)) for _ in range(count)]
        words = [w.upper() if rng.random() < 0.1 else w.capitalize() if rng.random() < 0.1 else w for w in words]
        sep = "  " if i % 7 == 0 else "\t" if i % 11 == 0 else " "
        texts.append(sep.join(words) + str(rng.choice(_PUNCT)))
    return texts


@pytest.mark.parametrize("model", ["clip", "siglip", "clap"])
def test_token_ids_and_masks_equal_the_hf_tokenizers(pretrained_folders, model):
    from transformers import AutoTokenizer

    folder = pretrained_folders[model]
    spec = TextSpec.from_hf(hf_configs(folder))
    hf = AutoTokenizer.from_pretrained(folder)
    texts = varied_texts()
    assert len(texts) >= 200 and spec.pad_id == hf.pad_token_id
    padding = "max_length" if spec.padding == "max_length" else True
    want = hf(texts, padding=padding, truncation=True, max_length=spec.max_length, return_tensors="np")
    got = TextTokenizer(folder, spec, bucket=1)(texts)  # bucket 1: the batch's longest, as padding=True
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])
    truncated = got["attention_mask"].sum(axis=1) == spec.max_length
    assert truncated.any() and (got["input_ids"][truncated, -1] == hf.eos_token_id).all()  # eos kept


def test_the_pad_token_is_the_tokenizers_own(pretrained_folders):
    specs = {m: TextSpec.from_hf(hf_configs(pretrained_folders[m])) for m in ("clip", "siglip", "clap")}
    assert {m: (s.pad_token, s.padding) for m, s in specs.items()} == {
        "clip": ("<|endoftext|>", "longest"), "siglip": ("</s>", "max_length"), "clap": ("<pad>", "longest")}
    assert specs["siglip"].max_length == 64
    out = TextTokenizer(pretrained_folders["siglip"], specs["siglip"], bucket=8)(["a cat"])
    assert out["input_ids"].shape == (1, 64)  # fixed-length padding ignores the session's bucket


# -- audio -----------------------------------------------------------------------------------


def _wave(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    tone = 0.3 * np.sin(2 * np.pi * (220 + 300 * seed) * t) + 0.05 * rng.standard_normal(t.shape)
    return tone.astype(np.float32)


@pytest.mark.parametrize("rate,seconds", [(48000, 0.3), (48000, 1.0), (48000, 2.5), (16000, 0.7), (44100, 1.6),
                                          (22050, 0.05)])
def test_clap_features_match_the_feature_extractor(pretrained_folders, rate, seconds):
    from transformers import AutoFeatureExtractor

    folder = pretrained_folders["clap"]
    spec = AudioSpec.from_hf(hf_configs(folder))
    wave = _wave(seconds, rate, seed=int(seconds * 10))
    at_rate = resample(wave, rate, CLAP_RATE)  # the extractor takes 48 kHz only: give it the runtime's resampling
    head = at_rate[:spec.clip_samples]  # a longer clip: the runtime keeps its start, one of rand_trunc's crops
    want = AutoFeatureExtractor.from_pretrained(folder)(head, sampling_rate=CLAP_RATE,
                                                        return_tensors="np")["input_features"]
    got = preprocess_audio([(wave, rate)], spec)
    assert got.shape == want.shape == (1, 1, spec.n_frames, spec.n_mels)
    np.testing.assert_allclose(got, want, rtol=AUDIO_RTOL, atol=AUDIO_RTOL * np.abs(want).max())


def test_clap_features_at_claps_real_size(tmp_path):
    """laion/clap-htsat-unfused's extractor settings (64 mels, 10 s, 50 Hz-14 kHz), a 3 s clip repeat-padded."""
    from transformers import ClapFeatureExtractor

    ClapFeatureExtractor(feature_size=64, sampling_rate=CLAP_RATE, hop_length=480, max_length_s=10,
                         fft_window_size=1024, frequency_min=50, frequency_max=14000, truncation="rand_trunc",
                         padding="repeatpad").save_pretrained(tmp_path)
    spec = AudioSpec.from_hf(hf_configs(tmp_path))
    wave = _wave(3.0, CLAP_RATE, seed=3)
    want = ClapFeatureExtractor.from_pretrained(tmp_path)(wave, sampling_rate=CLAP_RATE,
                                                          return_tensors="np")["input_features"]
    got = preprocess_audio([wave], spec)
    assert got.shape == want.shape == (1, 1, 1001, 64)
    np.testing.assert_allclose(got, want, rtol=AUDIO_RTOL, atol=AUDIO_RTOL * np.abs(want).max())
