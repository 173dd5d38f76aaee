"""Pretrained dual encoders' towers as mmedge encoders (CLIP, SigLIP, CLAP, CLIPVisionModelWithProjection)
against the models' own ``get_*_features``; the zero_shot head; unsupported architectures refused by name."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tiny_pretrained import pretrained_folders  # noqa: F401  (a session fixture)

from mmedge.encoders import create_encoder
from mmedge.errors import ConfigError
from mmedge.fusion import create_fusion_head


def _model(folder, cls_name):
    import transformers

    return getattr(transformers, cls_name).from_pretrained(str(folder), local_files_only=True).eval()


def _inputs(rng):
    ids = torch.from_numpy(rng.integers(3, 200, (3, 11)))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a padded text
    return {"image": (torch.from_numpy(rng.standard_normal((3, 3, 32, 32)).astype(np.float32)),),
            "text": (ids, mask), "audio": (torch.from_numpy(rng.standard_normal((3, 1, 101, 16)).astype(np.float32)),)}


def _reference(model, modality, inputs):
    if modality == "image":
        return model.get_image_features(pixel_values=inputs[0]).pooler_output
    if modality == "audio":
        return model.get_audio_features(input_features=inputs[0]).pooler_output
    return model.get_text_features(input_ids=inputs[0], attention_mask=inputs[1]).pooler_output


@pytest.mark.parametrize("family,cls_name,modalities", [
    ("clip", "CLIPModel", ("image", "text")), ("siglip", "SiglipModel", ("image", "text")),
    ("clap", "ClapModel", ("audio", "text"))])
def test_each_tower_gives_the_models_own_features(pretrained_folders, family, cls_name, modalities):
    folder = pretrained_folders[family]
    model, rng = _model(folder, cls_name), np.random.default_rng(0)
    for modality in modalities:
        enc = create_encoder(f"hf:{folder}", modality=modality).eval()
        inputs = _inputs(rng)[modality]
        if modality == "text" and family == "clip":  # CLIP pools at the first eos
            inputs[0][:, -1] = model.config.text_config.eos_token_id
        with torch.no_grad():
            pooled, seq, mask, embed = enc(*inputs)
            want = _reference(model, modality, inputs)
        assert enc.output_names() == tuple(f"{modality}_{n}" for n in ("pooled", "seq", "mask", "embed"))
        assert embed.shape == (3, enc.embed_dim) and pooled.shape == (3, enc.dim) and seq.shape[:2] == mask.shape
        assert torch.allclose(embed, want, atol=1e-5), (family, modality, (embed - want).abs().max())
        assert enc.record == {"family": family, "class": cls_name, "tower": modality}
        assert cls_name in enc.pretrained_source and f"{modality} tower" in enc.pretrained_source


def test_scores_are_the_models_scale_and_bias(pretrained_folders):
    clip = create_encoder(f"hf:{pretrained_folders['clip']}", modality="text")
    model = _model(pretrained_folders["clip"], "CLIPModel")
    assert clip.scores["image"].scale == pytest.approx(float(model.logit_scale.detach().exp()))
    assert clip.scores["image"].activation == "softmax" and clip.scores["image"].bias == 0.0
    siglip = create_encoder(f"hf:{pretrained_folders['siglip']}", modality="image")
    sig = _model(pretrained_folders["siglip"], "SiglipModel")
    assert siglip.scores["image"].bias == pytest.approx(float(sig.logit_bias.detach())) and siglip.scores["image"].activation == "sigmoid"
    clap = create_encoder(f"hf:{pretrained_folders['clap']}", modality="text")
    cm = _model(pretrained_folders["clap"], "ClapModel")
    assert clap.scores["audio"].scale == pytest.approx(float(cm.logit_scale_a.detach().exp()))


def test_single_tower_class(pretrained_folders):
    folder = pretrained_folders["clip_vision"]
    enc = create_encoder(f"hf:{folder}")  # one tower: no modality needed
    model = _model(folder, "CLIPVisionModelWithProjection")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc(x)[-1], model(pixel_values=x).image_embeds, atol=1e-5)
    assert enc.modality == "image" and enc.scores["image"].scale is None
    with pytest.raises(ConfigError, match="no text tower: key it by image"):
        create_encoder(f"hf:{folder}", modality="text")


def test_a_multi_tower_folder_needs_the_modality(pretrained_folders):
    with pytest.raises(ConfigError, match=r"towers \['image', 'text'\]: name the one to build \(--encoder image=hf:"):
        create_encoder(f"hf:{pretrained_folders['clip']}")
    with pytest.raises(ConfigError, match="has no audio tower"):
        create_encoder(f"hf:{pretrained_folders['clip']}", modality="audio")


def test_an_unsupported_architecture_lists_the_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BlipModel"], "model_type": "blip",
                                                      "text_config": {}, "vision_config": {}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"BlipModel.*supported families: clip \(CLIPModel.*siglip.*clap.*"
                                          r"docs/bring_your_own.md"):
        create_encoder(f"hf:{tmp_path}", modality="image")


def test_hf_spec_accepts_either_tower_and_names_the_towers(pretrained_folders):
    from mmedge.hf_folder import hf_modalities, hf_spec

    assert hf_modalities(pretrained_folders["clip"]) == ("image", "text")
    assert hf_modalities(pretrained_folders["clap"]) == ("audio", "text")
    with pytest.raises(ConfigError, match="holds a model for image and text"):
        hf_spec(f"hf:{pretrained_folders['clip']}", "audio")


def test_zero_shot_head_is_scale_times_cosine_plus_bias():
    torch.manual_seed(0)
    labels = torch.randn(3, 8)
    head = create_fusion_head("zero_shot", modalities=("image",), dims={"image": 8}, num_classes=3,
                              label_embeds=labels, scale=12.5, bias=-2.0)
    z = torch.randn(4, 8)
    want = 12.5 * torch.nn.functional.normalize(z, dim=-1) @ torch.nn.functional.normalize(labels, dim=-1).t() - 2.0
    assert head.input_names() == ("image_embed",)
    assert torch.allclose(head({"image_embed": z}), want, atol=1e-5)
    assert not any(p.requires_grad for p in head.parameters())
    fresh = create_fusion_head("zero_shot", modalities=("image",), dims={"image": 99}, num_classes=3)
    fresh.load_state_dict(head.state_dict())  # E comes from the weights
    assert torch.equal(fresh({"image_embed": z}), head({"image_embed": z}))


def test_zero_shot_head_refuses_two_modalities_and_bad_prompts():
    from mmedge.fusion.zero_shot import check_prompts

    with pytest.raises(ConfigError, match="scores one modality"):
        create_fusion_head("zero_shot", modalities=("image", "text"), dims={"image": 4, "text": 4}, num_classes=2)
    with pytest.raises(ConfigError, match="one \\{\\} for the label"):
        check_prompts(["a photo of a cat"])
    assert check_prompts("a {}") == ("a {}",)


def test_zero_shot_head_exports_with_parity(tmp_path):
    from mmedge.export.onnx_export import export_head, head_forward
    from mmedge.export.parity import check_parity, require_parity, torch_fn

    head = create_fusion_head("zero_shot", modalities=("audio",), dims={"audio": 16}, num_classes=4,
                              label_embeds=torch.randn(4, 16), scale=30.0, bias=1.5).eval()
    rng = np.random.default_rng(1)
    info = export_head(head, tmp_path / "zs.onnx", example_feats={"audio_embed": rng.standard_normal((2, 16)).astype(np.float32)})
    assert info.inputs[0]["name"] == "audio_embed" and info.outputs[0]["shape"] == ["batch", 4]
    cases = [{"audio_embed": rng.standard_normal((b, 16)).astype(np.float32)} for b in (1, 5)]
    assert require_parity(check_parity(torch_fn(head_forward(head), ("audio_embed",), ["logits"]), info.file, cases,
                                       atol=1e-4)).ok
