"""``int8-fp16-trt``: s8 symmetric Q/DQ around float16 compute, and how ONNX Runtime CPU checks it.

Real encoders (EfficientNet-Lite0 with ImageNet weights, all-MiniLM-L6-v2) and a seeded
cross-attention head, calibrated on real photos / sentences. The graph is TensorRT's (no engine
is built here); ONNX Runtime CPU simulates it for export's parity and accuracy figures, with its
WeightBiasQuantization optimizer off, and these tests show why that switch is needed.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from mmedge.encoders import create_encoder, freeze
from mmedge.export.accuracy import measured_on
from mmedge.export.calibration_batches import calibration_batches
from mmedge.export.onnx_export import export_encoder, export_head
from mmedge.export.parity import check_reduced_precision, onnx_fn
from mmedge.export.quantization import POLICIES, assert_trt_qdq, precisions
from mmedge.fusion import create_fusion_head
from mmedge.runtime.backends.ort import create_session, disabled_optimizers

FLOAT16 = onnx.TensorProto.FLOAT16


def _images(n: int) -> list[dict[str, np.ndarray]]:
    import skimage.data
    from sklearn.datasets import load_digits

    from mmedge.runtime.preprocess import preprocess_images
    from mmedge.runtime.specs import ImageSpec

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    digits = [np.repeat((255 - d * 15.9).astype(np.uint8)[:, :, None], 3, 2) for d in load_digits().images[:n]]
    return [{"pixel_values": preprocess_images([im], ImageSpec(size=96))[0]} for im in (photos + digits)[:n]]


def _sentences() -> list[dict[str, np.ndarray]]:
    from mmedge.encoders.text import MiniLMEncoder
    from mmedge.runtime.preprocess import TextTokenizer
    from mmedge.runtime.specs import TextSpec

    texts = ["A cat sleeps on the warm windowsill.", "The rocket lifted off at dawn.", "Say the number seven.",
             "She poured a cup of coffee.", "Two dogs chased a ball.", "The digit three, thick strokes.",
             "Heavy snow closed the pass.", "A robot picked up the red block."]
    enc = TextTokenizer(MiniLMEncoder.tokenizer_file(), TextSpec(max_length=16))(texts)
    return [{k: v[i] for k, v in enc.items()} for i in range(len(texts))]


def _feats(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    mask = np.ones((batch, 12), np.float32)
    mask[1:, 6:] = 0
    return {"image_seq": rng.standard_normal((batch, 16, 1280)).astype(np.float32),
            "image_mask": np.ones((batch, 16), np.float32),
            "text_seq": rng.standard_normal((batch, 12, 384)).astype(np.float32), "text_mask": mask}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(fp32 graph, int8-fp16-trt graph, manifest description, evaluation batches) per component."""
    out, rng = tmp_path_factory.mktemp("int8fp16"), np.random.default_rng(0)
    image, text = freeze(create_encoder("efficientnet_lite0")), freeze(create_encoder("minilm_l6"))
    torch.manual_seed(0)
    head = create_fusion_head("cross_attention", modalities=("image", "text"),
                              dims={"image": 1280, "text": 384}, num_classes=5, hidden=64)
    imgs, txts = _images(12), _sentences()
    parts = {
        "image": (image, "cnn", list(calibration_batches(imgs[:8], ["pixel_values"], batch=2)),
                  list(calibration_batches(imgs[8:], ["pixel_values"]))),
        "text": (text, "transformer", list(calibration_batches(txts[:6], text.input_names, batch=2)),
                 list(calibration_batches(txts[6:], text.input_names))),
        "head": (head, "head", [_feats(rng, 2) for _ in range(4)], [_feats(rng, 3)]),
    }
    done = {}
    for name, (module, model_type, calib, evals) in parts.items():
        src, dst = out / f"{name}.fp32.onnx", out / f"{name}.int8-fp16-trt.onnx"
        if name == "head":
            export_head(module, src, example_feats=_feats(rng, 2))
        else:
            export_encoder(module, src, example_inputs=calib[0])
        desc = POLICIES["int8-fp16-trt"].build(src, dst, calib=calib, model_type=model_type)
        done[name] = src, dst, desc, evals
    return done


def test_registered_as_a_precision_labelled_simulated():
    assert "int8-fp16-trt" in precisions()
    assert POLICIES["int8-fp16-trt"].target == "tensorrt"
    assert "simulated on ONNX Runtime" in measured_on("int8-fp16-trt")
    assert disabled_optimizers("int8-fp16-trt") == ("WeightBiasQuantization",)
    assert disabled_optimizers("int8") == disabled_optimizers(None) == ()


@pytest.mark.parametrize("name", ["image", "text", "head"])
def test_graph_is_s8_symmetric_qdq_around_fp16(built, name):
    _, dst, desc, _ = built[name]
    model = onnx.load(str(dst))
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and desc["quantize_linear"] == sum(n.op_type == "QuantizeLinear" for n in qdq)
    for node in qdq:  # float16 scale, explicit int8 zero point 0
        assert inits[node.input[1]].data_type == FLOAT16, node.name
        zero_point = numpy_helper.to_array(inits[node.input[2]])
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    assert_trt_qdq(dst)
    weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert not weights, [w.name for w in weights][:5]  # no float32 constants left outside the I/O casts
    io_types = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io_types <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    assert desc["compute"] == "fp16 outside Q/DQ" and desc["scales"] == "fp16"


@pytest.mark.parametrize("name", ["image", "text", "head"])
def test_ort_cpu_simulation_matches_fp32(built, name):
    src, dst, _, evals = built[name]
    report = check_reduced_precision(src, dst, evals, precision="int8-fp16-trt")
    assert report["within_threshold"] and report["min_cosine"] >= 0.95, report["min_cosine"]


def test_ort_weight_bias_quantization_breaks_fp16_qdq(built):
    """Why the optimizer is turned off: with it on, ORT's int32 bias scale (x_scale * w_scale,
    computed in float16) underflows and the image encoder's features are garbage."""
    src, dst, _, evals = built["image"]
    feed = evals[0]
    reference = onnx_fn(src)(feed)["image_pooled"]
    names = [o.name for o in create_session(dst).get_outputs()]

    def cosine(session) -> float:
        got = dict(zip(names, session.run(names, feed)))["image_pooled"].astype(np.float64).ravel()
        return float(got @ reference.ravel() / np.linalg.norm(got) / np.linalg.norm(reference))

    assert cosine(create_session(dst, precision="int8-fp16-trt")) >= 0.95
    assert cosine(create_session(dst)) < 0.9
