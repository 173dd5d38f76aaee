"""Local Hugging Face encoders (``hf:PATH``): folder checks, specs from the folder's configs, and
tiny BERT / ViT / wav2vec2 models built offline, through ``mmedge train`` + ``mmedge export`` (text)
and the export API (image + audio): fp32 parity, int8, and the runtime's labels against PyTorch's."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tiny_hf import WORDS, hf_models  # noqa: F401  (hf_models is a fixture)

from mmedge.config import get_recipe
from mmedge.errors import ConfigError

CLASSES = ["zero", "one", "two"]


def test_missing_folder_or_weights_is_a_config_error(tmp_path):
    from mmedge.encoders import create_encoder

    with pytest.raises(ConfigError, match="does not exist.*never downloads"):
        create_encoder(f"hf:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        create_encoder(f"hf:{tmp_path / 'empty'}")
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="no weights"):
        get_recipe("digits-match").with_encoders({"text": f"hf:{tmp_path / 'empty'}"})


def test_specs_come_from_the_folders(hf_models):
    r = get_recipe("digits-av").with_encoders({m: f"hf:{p}" for m, p in hf_models.items()})
    assert r.encoders["text"] == f"hf:{hf_models['text'].resolve()}"
    assert (r.image.size, r.image.mean, r.image.std) == (32, (0.5,) * 3, (0.5,) * 3)
    assert (r.text.tokenizer_file, r.text.lowercase) == ("tokenizer.json", False)
    assert (r.audio.front_end, r.audio.normalize, r.audio.sample_rate) == ("waveform", True, 16000)
    with pytest.raises(ConfigError, match="holds a model for image"):
        get_recipe("digits-av").with_encoders({"audio": f"hf:{hf_models['image']}"})


def test_encoders_give_pooled_seq_mask(hf_models):
    import torch

    from mmedge.encoders import create_encoder

    inputs = {"text": (torch.ones(2, 7, dtype=torch.long), torch.ones(2, 7, dtype=torch.long)),
              "image": (torch.randn(2, 3, 32, 32),), "audio": (torch.randn(2, 16000),)}
    for modality, folder in hf_models.items():
        enc = create_encoder(f"hf:{folder}")
        assert enc.modality == modality and enc.dim == 32 and not enc.trained_here
        pooled, seq, mask = enc(*inputs[modality])
        assert pooled.shape == (2, 32) and seq.shape[0] == 2 and seq.shape[2] == 32 and mask.shape == seq.shape[:2]
        assert enc.output_names() == tuple(f"{modality}_{n}" for n in ("pooled", "seq", "mask"))


def _text_jsonl(folder, n=36):
    rng = np.random.default_rng(0)
    fillers = [w for w in WORDS if w not in CLASSES]
    lines = [json.dumps({"text": " ".join([*rng.choice(fillers, 2), CLASSES[i % 3]]), "label": CLASSES[i % 3]})
             for i in range(n)]
    path = folder / "texts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _agree(pytorch_probs, runtime_labels, labels, *, margin=0.0):
    """Runtime labels equal PyTorch's wherever PyTorch's top-2 probability margin exceeds ``margin``."""
    top2 = np.sort(pytorch_probs, axis=1)[:, -2:]
    sure = (top2[:, 1] - top2[:, 0]) > margin
    expected = np.asarray(labels)[pytorch_probs.argmax(1)]
    assert sure.any()
    assert list(np.asarray(runtime_labels)[sure]) == list(expected[sure])


def _check_graphs(manifest, precisions=("fp32", "int8")):
    entries = [e["graphs"] for e in manifest["encoders"].values()] + [m["graphs"] for m in manifest["members"]]
    for graphs in entries:
        assert graphs["fp32"]["parity"]["ok"] and graphs["fp32"]["parity"]["max_abs_diff"] <= 1e-4
        assert set(precisions) <= set(graphs)
    assert all(manifest["precisions"][p] == "ok" for p in precisions)


@pytest.mark.slow
def test_text_encoder_through_train_and_export(hf_models, tmp_path):
    from mmedge.cli import app
    from mmedge.evaluation import TorchReference
    from mmedge.runtime import Session

    data, ckpt, bundle = _text_jsonl(tmp_path), tmp_path / "ckpt", tmp_path / "bundle"
    run = CliRunner().invoke(app, ["train", "--data", str(data), "--encoder", f"text=hf:{hf_models['text']}",
                                   "--epochs", "6", "-o", str(ckpt)])
    assert run.exit_code == 0, run.output
    meta = json.loads((ckpt / "recipe.json").read_text())
    assert meta["recipe"]["encoders"]["text"].startswith("hf:") and meta["plugins"] == []
    run = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(bundle), "--precision", "fp32,int8",
                                   "--calib-samples", "16", "--max-drop", "100"])
    assert run.exit_code == 0, run.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    _check_graphs(manifest)
    assert manifest["encoders"]["text"]["graphs"]["fp32"]["graph"]["model_type"] == "transformer"
    texts = ["the digit two", "spoken zero", "a photo of one", "one"]
    ref = TorchReference.from_checkpoint(ckpt)
    from mmedge.datasets import MultimodalDataset

    rows = MultimodalDataset("q", "classification", tuple(manifest["labels"]), np.zeros(4, np.int64), {}, texts=texts)
    probs = ref.predict(rows, range(4))[0]
    for precision, margin in (("fp32", 0.0), ("int8", 0.2)):
        with Session(bundle, precision=precision) as session:
            _agree(probs, session.predict(text=texts).labels, manifest["labels"], margin=margin)


@pytest.mark.slow
def test_image_and_audio_encoders_through_the_export_api(hf_models, tmp_path):
    import torch

    from mmedge.export.exporter import ExportConfig
    from mmedge.export.user_model import Member, build_ensemble, export_model
    from mmedge.runtime import Session
    from mmedge.runtime.audio import preprocess_audio
    from mmedge.runtime.preprocess import preprocess_images
    from mmedge.runtime.specs import AudioSpec

    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.LayerNorm(64), torch.nn.Linear(64, 3))

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = head

        def forward(self, feats):
            return self.mlp(torch.cat([feats["image_pooled"], feats["audio_pooled"]], dim=-1)) * 20.0

    rng = np.random.default_rng(0)
    samples = [{"image": rng.integers(0, 256, (48, 40, 3), dtype=np.uint8), "label": CLASSES[i % 3],
                "audio": (rng.standard_normal(12000).astype(np.float32) * 0.2, 16000)} for i in range(16)]
    kwargs = dict(encoders={"image": f"hf:{hf_models['image']}", "audio": f"hf:{hf_models['audio']}"},
                  heads={"fuse": Member(Head(), inputs=("image_pooled", "audio_pooled"))}, labels=CLASSES,
                  specs={"audio": AudioSpec(sample_rate=16000, clip_seconds=1.0)})  # the folder sets the rate
    manifest = export_model(**kwargs, calib=samples[:12], eval_data=samples[12:], out=tmp_path / "b",
                            config=ExportConfig(precisions=("fp32", "int8"), calib_samples=12, max_drop=100.0))
    _check_graphs(manifest)
    assert manifest["inputs"]["audio"]["front_end"] == "waveform" and manifest["inputs"]["image"]["size"] == 32
    assert manifest["encoders"]["audio"]["inputs"][0]["name"] == "waveform"
    assert {"fp32", "int8", "pytorch"} <= set(manifest["metrics"])
    model, _ = build_ensemble(**kwargs)  # the same weights: the folders', and the shared head MLP
    images, waves = [s["image"] for s in samples], [s["audio"][0] for s in samples]
    spec = model.recipe
    probs = model.predict({"pixel_values": torch.from_numpy(preprocess_images(images, spec.image)),
                           "waveform": torch.from_numpy(preprocess_audio(waves, spec.audio))})[0]
    for precision, margin in (("fp32", 0.0), ("int8", 0.2)):
        with Session(tmp_path / "b", precision=precision) as session:
            _agree(probs, session.predict(image=images, audio=waves, audio_rate=16000).labels, CLASSES, margin=margin)


def test_a_hf_audio_encoder_needs_its_clip_length(hf_models):
    from mmedge.export.user_model import build_ensemble

    with pytest.raises(ConfigError, match=r"clip.*AudioSpec\(sample_rate=16000, clip_seconds=1.0\)"):
        build_ensemble(encoders={"audio": f"hf:{hf_models['audio']}"}, heads={"h": None}, labels=["a", "b"])


def test_a_hf_text_encoder_needs_its_token_length(hf_models):
    from mmedge.export.user_model import build_ensemble

    with pytest.raises(ConfigError, match=r"tokens.*TextSpec\(max_length=32\)"):
        build_ensemble(encoders={"text": f"hf:{hf_models['text']}"}, heads={"h": None}, labels=["a", "b"])
