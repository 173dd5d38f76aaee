"""Pretrained dual encoders exported as themselves, end to end, against transformers' own processor + model:
tiny CLIP (zero-shot member ensembled with a trained probe, every CPU precision), SigLIP (standalone, through
``mmedge export hf:PATH``) and CLAP (audio) folders (``tests/tiny_pretrained.py``). Raw non-square photos,
free text and clips: the runtime's similarity logits and zero-shot probabilities within 1e-4 of the model's
``logits_per_image`` / ``logits_per_audio``; ``mmedge run --query`` and ``Session.stream(queries=...)`` rank as
transformers does; the accuracy report per precision covers the zero-shot member."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tiny_pretrained import CLAP_RATE, pretrained_folders  # noqa: F401  (a session fixture)

from mmedge.cli import app
from mmedge.export.exporter import ExportConfig
from mmedge.export.pretrained import export_pretrained
from mmedge.export.user_model import Member
from mmedge.runtime import Session

pytestmark = pytest.mark.slow
LABELS = ["person", "cup", "cat", "rocket"]
PROMPTS = ["a photo of a {}", "a blurry picture of the {}."]
QUERIES = ["A red mug, on a table!", "an astronaut", "Café crème — déjà vu?", "a cat", "rockets " * 12]
TOL = 1e-4


def _photos() -> list[np.ndarray]:
    """Real photos (scikit-image) cut to several non-square aspect ratios, one label each (LABELS order)."""
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    cuts = [(slice(20, 180), slice(40, 400)), (slice(0, 300), slice(100, 210)), (slice(10, 97), slice(5, 140))]
    return [np.ascontiguousarray(img[r, c]) for img in sources for r, c in cuts]


def _rows(photos):
    return [{"image": p, "label": LABELS[i // 3]} for i, p in enumerate(photos)]


def _model(folder, cls_name):
    import transformers

    return getattr(transformers, cls_name).from_pretrained(str(folder), local_files_only=True).eval()


def _processor(folder):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(folder), local_files_only=True)


@torch.no_grad()
def _reference_logits(folder, cls_name, images, texts, padding=True) -> np.ndarray:
    """``logits_per_image`` of transformers' processor + model."""
    inputs = _processor(folder)(images=images, text=texts, padding=padding, truncation=True, return_tensors="pt")
    return _model(folder, cls_name)(**inputs).logits_per_image.numpy()


@torch.no_grad()
def _reference_zero_shot(folder, cls_name, images, padding=True) -> np.ndarray:
    """CLIP's zero-shot logits with transformers: templates embedded, normalised, averaged, normalised."""
    model, proc = _model(folder, cls_name), _processor(folder)
    texts = [p.format(label) for label in LABELS for p in PROMPTS]
    t = model.get_text_features(**proc(text=texts, padding=padding, truncation=True, return_tensors="pt")).pooler_output
    t = torch.nn.functional.normalize(t, dim=-1).reshape(len(LABELS), len(PROMPTS), -1).mean(1)
    t = torch.nn.functional.normalize(t, dim=-1)
    v = model.get_image_features(**proc(images=images, return_tensors="pt")).pooler_output
    v = torch.nn.functional.normalize(v, dim=-1)
    bias = model.logit_bias if hasattr(model, "logit_bias") else 0.0
    return (model.logit_scale.exp() * v @ t.T + bias).numpy()


def _softmax(x: np.ndarray, t: float = 1.0) -> np.ndarray:
    e = np.exp((x - x.max(1, keepdims=True)) / t)
    return e / e.sum(1, keepdims=True)


class Probe(torch.nn.Module):
    """A linear probe on the image tower's pooled output (a head trained on the same features)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, classes)

    def forward(self, image_pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(image_pooled)


def _trained_probe(folder, photos) -> Probe:
    from mmedge.config import encoder_spec
    from mmedge.encoders import create_encoder
    from mmedge.features import preprocessor

    enc = create_encoder(f"hf:{folder}", modality="image").eval()
    pre = preprocessor("image", encoder_spec(f"hf:{folder}", "image"))
    with torch.no_grad():
        pooled = enc(torch.from_numpy(pre(photos)["pixel_values"]))[0]
    y = torch.tensor([i // 3 for i in range(len(photos))])
    torch.manual_seed(0)
    probe = Probe(enc.dim, len(LABELS))
    opt = torch.optim.Adam(probe.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe(pooled), y).backward()
        opt.step()
    return probe.eval()


@pytest.fixture(scope="module")
def clip_bundle(pretrained_folders, tmp_path_factory):
    """CLIP: the zero-shot member and a trained probe, weights fit on validation, every CPU precision."""
    folder, photos = pretrained_folders["clip"], _photos()
    out = tmp_path_factory.mktemp("clip") / "bundle"
    manifest = export_pretrained(folder, labels=LABELS, prompts=PROMPTS, calib=[{"image": p} for p in photos],
                                 heads={"probe": Member(_trained_probe(folder, photos), inputs=("image_pooled",))},
                                 val_data=_rows(photos[::-1]), eval_data=_rows(photos), out=out,
                                 config=ExportConfig(precisions=("fp32", "fp16", "int8", "int8-trt"), max_drop=100.0,
                                                     calib_samples=12))
    return out, manifest, folder, photos


def test_clip_similarity_and_zero_shot_match_transformers(clip_bundle):
    out, manifest, folder, photos = clip_bundle
    want = _reference_logits(folder, "CLIPModel", photos, QUERIES)
    with Session(out) as session:
        got = session.similarity(image=photos, text=QUERIES)
        probs = session.similarity(image=photos, text=QUERIES, probabilities=True)
        pred = session.predict(image=photos)
        temperature = session.bundle.member("zero_shot").temperature
    assert got.shape == (len(photos), len(QUERIES))
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    np.testing.assert_allclose(probs, _softmax(want), atol=TOL, rtol=0)
    np.testing.assert_array_equal(np.argsort(-got, 1), np.argsort(-want, 1))
    zero_shot = _reference_zero_shot(folder, "CLIPModel", photos)
    np.testing.assert_allclose(pred.member_probabilities["zero_shot"], _softmax(zero_shot, temperature), atol=TOL)


def test_the_ensemble_reports_accuracy_per_precision_and_its_fitted_weights(clip_bundle):
    out, manifest, _, _ = clip_bundle
    members = {m["name"]: m for m in manifest["members"]}
    assert set(members) == {"zero_shot", "probe"} and members["zero_shot"]["inputs"] == ["image_embed"]
    assert sorted([members["zero_shot"]["weight"], members["probe"]["weight"]]) != [1.0, 1.0]  # fit on val_data
    assert manifest["modalities"] == ["image", "text"] and manifest["optional_modalities"] == ["text"]
    assert manifest["similarity"]["family"] == "clip" and manifest["similarity"]["activation"] == "softmax"
    for precision in ("fp32", "fp16", "int8", "int8-trt"):
        metrics = manifest["metrics"][precision]
        assert 0.0 <= metrics["ensemble"] <= 1.0 and set(metrics["members"]) == {"zero_shot", "probe"}
    for tower in ("image", "text"):
        graphs = manifest["encoders"][tower]["graphs"]
        assert graphs["fp32"]["graph"]["model_type"] == "transformer"
        for precision in ("fp16", "int8"):
            if "fidelity" in graphs[precision]:  # built (not a recorded build fallback)
                assert graphs[precision]["fidelity"]["outputs"][f"{tower}_embed"]["min_cosine"] > 0.9


# ops the ONNX-TensorRT parser does not support (onnx-tensorrt docs/operators.md, "N" rows)
TRT_UNSUPPORTED = {"BitShift", "Compress", "ConcatFromSequence", "ConvInteger", "Det", "DynamicQuantizeLinear",
                   "Hardmax", "IsInf", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "Mod", "Multinomial", "NonZero",
                   "OneHot", "QLinearConv", "QLinearMatMul", "RandomNormal", "RandomNormalLike", "RoiAlign",
                   "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
                   "SequenceLength", "Shrink", "SplitToSequence", "StringNormalizer", "TfIdfVectorizer", "Unique"}


def test_tensorrt_graphs_of_the_towers_use_parser_ops_and_signed_qdq(clip_bundle):
    import onnx

    from mmedge.export.quantization.graph_surgery import assert_trt_qdq

    out, manifest, _, _ = clip_bundle
    for tower in ("image", "text"):
        for precision in ("fp16", "int8-trt"):
            entry = manifest["encoders"][tower]["graphs"][precision]
            ops = {n.op_type for n in onnx.load(str(out / entry["file"])).graph.node}
            assert not ops & TRT_UNSUPPORTED, (tower, precision, ops & TRT_UNSUPPORTED)
            if precision == "int8-trt" and entry.get("build_fallback") is None:
                assert_trt_qdq(out / entry["file"])


def test_run_query_ranks_as_transformers(clip_bundle, tmp_path):
    from PIL import Image

    out, _, folder, photos = clip_bundle
    path = tmp_path / "x.png"
    Image.fromarray(photos[4]).save(path)
    args = ["run", str(out), "--image", str(path), "--json"] + [a for q in QUERIES for a in ("--query", q)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ranked = [row["query"] for row in json.loads(result.output)["queries"]]
    want = _reference_logits(folder, "CLIPModel", [np.asarray(Image.open(path).convert("RGB"))], QUERIES)[0]
    assert ranked == [QUERIES[i] for i in np.argsort(-want, kind="stable")]


def _video(path, photos):
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    for p in photos:
        writer.write(np.ascontiguousarray(cv2.resize(p, (96, 64))[:, :, ::-1]))  # BGR, 96x64
    writer.release()
    return path


def test_several_streams_score_their_frames_against_queries(clip_bundle, tmp_path):
    out, _, _, photos = clip_bundle
    videos = [_video(tmp_path / "a.avi", photos[:3]), _video(tmp_path / "b.avi", photos[6:9])]
    with Session(out) as session:
        ticks = list(session.streams(videos, queries=QUERIES[:3], fps=0))
        rows = [r for tick in ticks for r in tick]
        assert len(rows) == 6 and {r.index for r in rows} == {0, 1}
        for r in rows:
            direct = session.similarity(image=r.frame, image_color_order="BGR", text=QUERIES[:3])[0]
            np.testing.assert_allclose(r.prediction.scores, direct, atol=1e-5)
            assert r.prediction.queries == tuple(QUERIES[:3])


def test_stream_queries_and_the_example_on_a_video_and_a_folder(clip_bundle, tmp_path, capsys):
    from PIL import Image

    out, _, folder, photos = clip_bundle
    video = _video(tmp_path / "clip.avi", photos[:4])
    with Session(out) as session:
        streamed = list(session.stream(video, queries=QUERIES[:3]))
        assert len(streamed) == 4 and streamed[0][1].queries == tuple(QUERIES[:3])
        for frame, matches in streamed:
            direct = session.similarity(image=frame, image_color_order="BGR", text=QUERIES[:3])[0]
            np.testing.assert_allclose(matches.scores, direct, atol=1e-6)
            want = _reference_logits(folder, "CLIPModel", [frame[:, :, ::-1]], QUERIES[:3])[0]
            assert matches.best == QUERIES[int(np.argmax(want))]
    main = _example_main()
    assert main(["--bundle", str(out), "--source", str(video), "--query", "a cat", "--query", "a cup"]) == 0
    shots = tmp_path / "frames"
    shots.mkdir()
    for i, p in enumerate(photos[:3]):
        Image.fromarray(p).save(shots / f"{i:03d}.png")
    assert main(["--bundle", str(out), "--source", str(shots), "--query", "a cat", "--query", "a cup"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("frame ") == 4 + 3 and ("'a cat'" in printed or "'a cup'" in printed)


def _example_main():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "open_vocabulary_camera.py"
    spec = importlib.util.spec_from_file_location("open_vocabulary_camera", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_siglip_standalone_from_the_command_line(pretrained_folders, tmp_path):
    from PIL import Image

    folder, photos = pretrained_folders["siglip"], _photos()
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, p in enumerate(photos):
        Image.fromarray(p).save(calib / f"{i:02d}.png")
    out = tmp_path / "siglip"
    args = ["export", f"hf:{folder}", "-o", str(out), "--labels", ",".join(LABELS), "--precision", "fp32",
            "--calib", str(calib), "--calib-samples", "8"] + [a for p in PROMPTS for a in ("--prompt", p)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with Session(out) as session:
        got = session.similarity(image=photos, text=QUERIES)
        sig = session.similarity(image=photos, text=QUERIES, probabilities=True)
        pred = session.predict(image=photos)
    want = _reference_logits(folder, "SiglipModel", photos, QUERIES, padding="max_length")
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-want)), atol=TOL, rtol=0)
    zero_shot = _reference_zero_shot(folder, "SiglipModel", photos, padding="max_length")
    np.testing.assert_allclose(pred.probabilities, _softmax(zero_shot), atol=TOL)


def _clips():
    rng = np.random.default_rng(3)
    t = np.arange(CLAP_RATE) / CLAP_RATE
    tones = [0.3 * np.sin(2 * np.pi * f * t[: int(CLAP_RATE * s)]) for f, s in ((440, 0.4), (1200, 0.75), (3000, 1.0))]
    return [(w + 0.01 * rng.standard_normal(len(w))).astype(np.float32) for w in tones]


def test_clap_audio_against_text_matches_transformers(pretrained_folders, tmp_path):
    folder, clips = pretrained_folders["clap"], _clips()
    labels = ["a tone", "speech", "rain"]
    out = tmp_path / "clap"
    export_pretrained(folder, labels=labels, prompts=["the sound of {}"], calib=[{"audio": c} for c in clips * 3],
                      out=out, config=ExportConfig(precisions=("fp32",), calib_samples=6))
    texts = ["a dog barking", "Piano music!", "the sound of rain"]
    with Session(out) as session:
        got = session.similarity(audio=clips, audio_rate=CLAP_RATE, text=texts)
        pred = session.predict(audio=clips, audio_rate=CLAP_RATE)
    model, proc = _model(folder, "ClapModel"), _processor(folder)
    with torch.no_grad():
        inputs = proc(audio=clips, text=texts, sampling_rate=CLAP_RATE, padding=True, truncation=True, return_tensors="pt")
        ref = model(**inputs)
        label_inputs = proc(text=[f"the sound of {x}" for x in labels], padding=True, return_tensors="pt")
        zs = model(input_features=inputs["input_features"], **label_inputs).logits_per_audio.numpy()
    np.testing.assert_allclose(got, ref.logits_per_audio.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(pred.probabilities, _softmax(zs), atol=TOL)
