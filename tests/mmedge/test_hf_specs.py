"""Specs derived from Hugging Face configs (``mmedge.hf_specs``): what is read, and every option the runtime
cannot reproduce refused by name (issue 17 item 2, bad input)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mmedge.errors import BundleError, ConfigError
from mmedge.hf_specs import hf_configs
from mmedge.runtime.preprocess import TextTokenizer
from mmedge.runtime.specs import AudioSpec, HFConfigs, ImageSpec, TextSpec
from tiny_pretrained import clap_feature_extractor, clip_tokenizer, siglip_tokenizer

CLIP = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 224},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True}


def _image(**changes) -> ImageSpec:
    return ImageSpec.from_hf(HFConfigs("m", {}, {**CLIP, **changes}))


def test_clip_and_vit_timm_style_processors_are_read():
    assert dataclasses.astuple(_image())[:2] == (224, "shortest_edge")
    timm = _image(size={"shortest_edge": 256})  # ViT / timm: resize 256, crop 224
    assert (timm.size, timm.resize_size, timm.interpolation) == (224, 256, "bicubic")
    old = _image(size=224, crop_size=224)  # openai/clip-vit-*'s config: ints
    assert (old.resize, old.size) == ("shortest_edge", 224)
    vit = ImageSpec.from_hf(HFConfigs("m", {}, {"image_processor_type": "ViTImageProcessor", "resample": 2,
                                                 "size": {"height": 32, "width": 32}}))
    assert (vit.resize, vit.interpolation, vit.size) == ("squash", "bilinear", 32)


@pytest.mark.parametrize("changes,named", [
    ({"do_pad": True}, "do_pad"), ({"crop_pct": 0.875}, "crop_pct"), ({"resample": 1}, "resample=1 .*LANCZOS"),
    ({"resample": 4}, "resample=4 .*BOX"), ({"do_center_crop": False}, "do_center_crop"),
    ({"size": {"height": 224, "width": 300}, "do_center_crop": False}, "size"),
    ({"crop_size": {"height": 224, "width": 200}}, "crop_size"), ({"rescale_factor": -1.0}, "rescale_factor"),
    ({"do_resize": False}, "do_resize"), ({"size_divisor": 32}, "size_divisor"),
    ({"do_flip_channel_order": True}, "do_flip_channel_order"), ({"size": {"longest_edge": 224}}, "size")])
def test_an_image_option_the_runtime_cannot_reproduce_is_refused_by_name(changes, named):
    with pytest.raises(ConfigError, match=rf"processor option {named}") as refused:
        _image(**changes)
    assert "cannot be reproduced by the mmedge runtime" in str(refused.value)


def test_a_tokenizer_without_pad_or_eos_token_says_so(tmp_path):
    tok = clip_tokenizer(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    for key in ("pad_token", "eos_token"):
        config.pop(key, None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "special_tokens_map.json").unlink(missing_ok=True)
    assert tok.eos_token == "<|endoftext|>"
    with pytest.raises(ConfigError, match="neither a pad token nor an eos token"):
        TextSpec.from_hf(hf_configs(tmp_path))


def test_the_text_length_is_the_models_unless_asked(tmp_path):
    clip_tokenizer(tmp_path, max_length=16)
    assert TextSpec.from_hf(hf_configs(tmp_path)).max_length == 16
    assert TextSpec.from_hf(hf_configs(tmp_path), TextSpec(max_length=8)).max_length == 8
    with pytest.raises(ConfigError, match="exceeds.*16"):
        TextSpec.from_hf(hf_configs(tmp_path), TextSpec(max_length=32))


def test_siglip_is_padded_to_its_own_length_only(tmp_path):
    siglip_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip", "text_config": {
        "model_type": "siglip_text_model", "max_position_embeddings": 64}}))
    assert TextSpec.from_hf(hf_configs(tmp_path)).padding == "max_length"
    with pytest.raises(ConfigError, match="padded to 64 tokens.*max_length 64"):
        TextSpec.from_hf(hf_configs(tmp_path), TextSpec(max_length=32))


def test_the_runtime_refuses_a_pad_token_or_id_the_tokenizer_lacks(tmp_path):
    clip_tokenizer(tmp_path)
    spec = TextSpec.from_hf(hf_configs(tmp_path))
    ids = TextTokenizer(tmp_path, spec, bucket=1)(["a cat", "a photo of a red mug"])["input_ids"]
    assert ids[0, -1] == TextTokenizer(tmp_path, spec).pad_id  # padded with <|endoftext|>
    with pytest.raises(BundleError, match=r"no '\[PAD\]' token.*pad_token"):
        TextTokenizer(tmp_path, dataclasses.replace(spec, pad_token="[PAD]"))
    with pytest.raises(BundleError, match="pad_id 3.*re-export"):
        TextTokenizer(tmp_path, dataclasses.replace(spec, pad_id=3))


@pytest.mark.parametrize("option,value,named", [("truncation", "fusion", "truncation='fusion'"),
                                                ("padding", "edge", "padding='edge'"),
                                                ("top_db", 80, "top_db=80")])
def test_a_clap_option_the_runtime_cannot_reproduce_is_refused_by_name(tmp_path, option, value, named):
    clap_feature_extractor(tmp_path)
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), option: value}))
    with pytest.raises(ConfigError, match=rf"processor option {named}.*cannot be reproduced"):
        AudioSpec.from_hf(hf_configs(tmp_path))


def test_clap_reads_its_own_clip_length(tmp_path):
    clap_feature_extractor(tmp_path)
    spec = AudioSpec.from_hf(hf_configs(tmp_path))
    assert (spec.front_end, spec.sample_rate, spec.clip_seconds, spec.n_mels, spec.padding) == (
        "clap_mel", 48000, 1.0, 16, "repeatpad")
    with pytest.raises(ConfigError, match="max_length_s=1"):
        AudioSpec.from_hf(hf_configs(tmp_path), AudioSpec(sample_rate=48000, clip_seconds=3.0))


@pytest.mark.parametrize("padding,want", [("pad", [1, 2, 3, 0, 0, 0, 0]), ("repeatpad", [1, 2, 3, 1, 2, 3, 0]),
                                          ("repeat", [1, 2, 3, 1, 2, 3, 1]), ("center", [0, 0, 1, 2, 3, 0, 0])])
def test_clip_fits(padding, want):
    from mmedge.runtime.waveform import fit_wave

    spec = AudioSpec(sample_rate=7000, clip_seconds=0.001, padding=padding)  # 7 samples
    np.testing.assert_array_equal(fit_wave(np.array([1, 2, 3], np.float32), spec), want)
    np.testing.assert_array_equal(fit_wave(np.arange(10, dtype=np.float32), spec)[:2],
                                  [1, 2] if padding == "center" else [0, 1])


@pytest.mark.parametrize("changes", [{"rescale_factor": 1 / 127.5}, {"do_rescale": False},
                                     {"do_rescale": False, "do_normalize": False}, {"do_normalize": False}])
def test_any_rescaling_is_folded_into_mean_and_std(changes):
    """(x * r - m) / s for the processor equals the spec's (x / 255 - m') / s' on every pixel value."""
    spec, cfg = _image(**changes), {**CLIP, **changes}
    x = np.arange(256, dtype=np.float64)[:, None]
    r = cfg["rescale_factor"] if cfg["do_rescale"] else 1.0
    m, s = (np.array(cfg["image_mean"]), np.array(cfg["image_std"])) if cfg["do_normalize"] else (np.zeros(3), np.ones(3))
    np.testing.assert_allclose((x / 255 - np.array(spec.mean)) / np.array(spec.std), (x * r - m) / s, rtol=1e-9,
                               atol=1e-9)
