"""ONNX export of the real encoders and every fusion head: dynamic axes and parity vs PyTorch."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mmedge.encoders import create_encoder, freeze
from mmedge.errors import ExportError, ParityError
from mmedge.export.onnx_export import export_encoder, export_head, head_forward
from mmedge.export.parity import check_parity, require_parity, torch_fn
from mmedge.fusion import create_fusion_head, list_fusion_heads

DIMS = {"image": 1280, "text": 384, "audio": 128}
ATOL = 1e-4


def _text(rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
    ids = rng.integers(1000, 20000, (batch, length)).astype(np.int64)
    ids[:, 0] = 101  # [CLS]
    mask = np.ones((batch, length), np.int64)
    for row in range(1, batch):  # every row but the first is padded
        mask[row, max(2, length - 3 * row):] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def _feats(rng: np.random.Generator, batch: int, tokens: int, steps: int) -> dict[str, np.ndarray]:
    text_mask = np.ones((batch, tokens), np.float32)
    text_mask[1:, tokens // 2:] = 0
    return {
        "image_pooled": rng.standard_normal((batch, 1280)), "image_seq": rng.standard_normal((batch, 16, 1280)),
        "image_mask": np.ones((batch, 16)), "text_pooled": rng.standard_normal((batch, 384)),
        "text_seq": rng.standard_normal((batch, tokens, 384)), "text_mask": text_mask,
        "audio_pooled": rng.standard_normal((batch, 128)), "audio_seq": rng.standard_normal((batch, steps, 128)),
        "audio_mask": np.ones((batch, steps)),
    }


def _f32(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in d.items()}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_export")


@pytest.fixture(scope="module")
def image(out_dir):
    enc = freeze(create_encoder("efficientnet_lite0"))
    x = np.random.default_rng(0).standard_normal((2, 3, 128, 128)).astype(np.float32)
    return enc, export_encoder(enc, out_dir / "image.onnx", example_inputs={"pixel_values": x})


@pytest.fixture(scope="module")
def text(out_dir):
    enc = freeze(create_encoder("minilm_l6"))
    return enc, export_encoder(enc, out_dir / "text.onnx", example_inputs=_text(np.random.default_rng(0), 2, 16))


@pytest.fixture(scope="module")
def audio(out_dir):
    torch.manual_seed(0)
    enc = freeze(create_encoder("audio_cnn"))
    mel = np.random.default_rng(0).standard_normal((2, 1, 64, 101)).astype(np.float32)
    return enc, export_encoder(enc, out_dir / "audio.onnx", example_inputs={"mel": mel})


def _parity(module, info, cases):
    fn = torch_fn(module, [i["name"] for i in info.inputs], [o["name"] for o in info.outputs])
    return require_parity(check_parity(fn, info.file, cases, atol=ATOL))


def test_image_encoder_parity(image):
    enc, info = image
    assert info.inputs == [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 128, 128]}]
    assert [o["name"] for o in info.outputs] == list(enc.output_names())
    assert info.outputs[1]["shape"] == ["batch", 16, 1280] and info.opset >= 17 and info.exporter == "dynamo"
    rng = np.random.default_rng(1)
    cases = [{"pixel_values": rng.standard_normal((b, 3, 128, 128)).astype(np.float32)} for b in (1, 2, 7)]
    report = _parity(enc, info, cases)
    assert report.max_abs_diff <= ATOL and report.min_cosine > 0.99999
    assert len(report.to_dict()["cases"]) == 3 * 3


def test_text_encoder_parity_two_lengths(text):
    enc, info = text
    assert {i["name"]: i["shape"] for i in info.inputs} == {"input_ids": ["batch", "tokens"],
                                                            "attention_mask": ["batch", "tokens"]}
    assert info.inputs[0]["dtype"] == "int64" and info.outputs[1]["shape"] == ["batch", "tokens", 384]
    rng = np.random.default_rng(2)
    cases = [_text(rng, b, n) for n in (9, 32) for b in (1, 2, 7)]
    assert _parity(enc, info, cases).max_abs_diff <= ATOL


def test_audio_encoder_parity_two_frame_counts(audio):
    enc, info = audio
    assert info.inputs[0]["shape"] == ["batch", 1, 64, "frames"], info.notes
    assert info.outputs[1]["shape"] == ["batch", "audio_steps", 128]
    rng = np.random.default_rng(3)
    cases = [{"mel": rng.standard_normal((b, 1, 64, t)).astype(np.float32)} for t in (101, 160) for b in (1, 2, 7)]
    assert _parity(enc, info, cases).max_abs_diff <= ATOL


@pytest.mark.parametrize("name", [n for n in list_fusion_heads() if n != "zero_shot"])  # one modality: its own test
def test_head_parity(name, out_dir):
    torch.manual_seed(0)
    head = create_fusion_head(name, modalities=("image", "text", "audio"), dims=DIMS, num_classes=10, hidden=128).eval()
    names = head.input_names()
    rng = np.random.default_rng(4)
    example = {k: v for k, v in _f32(_feats(rng, 2, 12, 6)).items() if k in names}
    info = export_head(head, out_dir / f"{name}.onnx", example_feats=example)
    assert [i["name"] for i in info.inputs] == list(names) and info.outputs[0]["name"] == "logits"
    assert info.outputs[0]["shape"] == ["batch", 10]
    for i in info.inputs:
        assert i["shape"][0] == "batch"
        if i["name"] in ("text_seq", "text_mask"):
            assert i["shape"][1] == "tokens"
    cases = [{k: v for k, v in _f32(_feats(rng, b, n, 7)).items() if k in names} for n in (9, 32) for b in (1, 2, 7)]
    report = require_parity(check_parity(torch_fn(head_forward(head), names, ["logits"]), info.file, cases, atol=ATOL))
    assert report.ok
    assert not _weight_only_nodes(info.file)  # folded at export (cross-attention's Wq Wk^T: 128 x 128)


def _weight_only_nodes(path: str) -> list[str]:
    """Nodes whose every input is an initializer or a constant: work a load or a quantizer would redo."""
    import onnx

    graph = onnx.load(path).graph
    constant = {i.name for i in graph.initializer}
    constant |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [f"{n.op_type} {n.name}" for n in graph.node
            if n.op_type != "Constant" and n.input and all(i in constant for i in n.input if i)]


def test_parity_break_raises(audio):
    enc, info = audio
    broken = copy.deepcopy(enc)
    with torch.no_grad():
        broken.body[1][0].weight.mul_(1.05)  # a perturbed conv: PyTorch no longer matches the graph
    case = {"mel": np.random.default_rng(5).standard_normal((2, 1, 64, 101)).astype(np.float32)}
    report = check_parity(torch_fn(broken, ["mel"], list(enc.output_names())), info.file, [case], atol=ATOL)
    assert not report.ok
    with pytest.raises(ParityError, match=r"audio\.onnx.*audio_pooled.*mel\[2x1x64x101\]"):
        require_parity(report)


def test_batch_one_example_is_refused(tmp_path):
    head = create_fusion_head("concat", modalities=("image", "text"), dims=DIMS, num_classes=3, hidden=16)
    feats = {"image_pooled": np.zeros((1, 1280), np.float32), "text_pooled": np.zeros((1, 384), np.float32)}
    with pytest.raises(ExportError, match="batch"):
        export_head(head, tmp_path / "h.onnx", example_feats=feats)
