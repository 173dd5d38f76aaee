"""FP16 conversion, NNCF INT8 (CPU u8 / TensorRT s8 symmetric, and s8 around FP16 compute) and calibration
validation."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from mmedge.encoders import create_encoder, freeze
from mmedge.errors import CalibrationError, ExportError
from mmedge.export.calibration_batches import calibration_batches, check_calibration
from mmedge.export.onnx_export import export_encoder, export_head
from mmedge.export.parity import check_reduced_precision, onnx_fn, row_cosine
from mmedge.export.accuracy import measured_on
from mmedge.export.quantization.attention_fusion import MS_DOMAIN, fuse_attention, pack_projections
from mmedge.export.quantization import POLICIES, NothingToQuantize, assert_trt_qdq, export_precisions, qdq_summary
from mmedge.export.quantization.nncf_ptq import DEPTHWISE_RANGES
from mmedge.runtime.backends.ort import create_session
from mmedge.runtime.precisions import QDQ_AS_FLOAT, get_precision
from mmedge.fusion import create_fusion_head

DIMS = {"image": 1280, "text": 384}


def _images(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Real photos (scikit-image) and digits (scikit-learn), preprocessed as the runtime does."""
    import skimage.data
    from sklearn.datasets import load_digits

    from mmedge.runtime.preprocess import preprocess_images
    from mmedge.runtime.specs import ImageSpec

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    digits = load_digits().images[seed * n: seed * n + n]
    images = photos + [np.repeat((255 - d * 15.9).astype(np.uint8)[:, :, None], 3, 2) for d in digits]
    return [{"pixel_values": preprocess_images([im], ImageSpec(size=128, mean=(0.498,) * 3, std=(0.502,) * 3))[0]} for im in images[:n]]


def _sentences() -> list[dict[str, np.ndarray]]:
    from mmedge.encoders.text import MiniLMEncoder
    from mmedge.runtime.preprocess import TextTokenizer
    from mmedge.runtime.specs import TextSpec

    texts = ["A cat sleeps on the warm windowsill.", "The rocket lifted off at dawn.", "Say the number seven.",
             "She poured a cup of coffee.", "Two dogs chased a ball across the park.", "The digit three, thick strokes.",
             "Heavy snow closed the pass overnight.", "A robot picked up the red block.", "The moon was bright."]
    enc = TextTokenizer(MiniLMEncoder.tokenizer_file(), TextSpec(max_length=16, lowercase=True))(texts)
    return [{k: v[i] for k, v in enc.items()} for i in range(len(texts))]


def _feats(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    text_mask = np.ones((batch, 12), np.float32)
    text_mask[1:, 6:] = 0
    return {"image_seq": rng.standard_normal((batch, 16, 1280)).astype(np.float32),
            "image_mask": np.ones((batch, 16), np.float32),
            "text_seq": rng.standard_normal((batch, 12, 384)).astype(np.float32), "text_mask": text_mask}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """fp32 graphs of the image and text encoders and a cross-attention head, with calibration sets."""
    out = tmp_path_factory.mktemp("quantize")
    img, txt = _images(12, 0), _sentences()
    image = freeze(create_encoder("efficientnet_lite0"))
    info_i = export_encoder(image, out / "image.onnx", example_inputs=next(calibration_batches(img, ["pixel_values"], batch=2)))
    text = freeze(create_encoder("minilm_l6"))
    info_t = export_encoder(text, out / "text.onnx", example_inputs=next(calibration_batches(txt, text.input_names, batch=2)))
    torch.manual_seed(0)
    head = create_fusion_head("cross_attention", modalities=("image", "text"), dims=DIMS, num_classes=5, hidden=64)
    rng = np.random.default_rng(0)
    info_h = export_head(head, out / "head.onnx", example_feats=_feats(rng, 2))
    with pytest.warns(UserWarning, match="only"):
        calib = {"image": check_calibration(calibration_batches(img[:8], ["pixel_values"]), info_i.inputs),
                 "text": check_calibration(calibration_batches(txt[:6], text.input_names), info_t.inputs),
                 "head": check_calibration([_feats(rng, 2) for _ in range(4)], info_h.inputs)}
    evals = {"image": list(calibration_batches(img[8:], ["pixel_values"])),
             "text": list(calibration_batches(txt[6:], text.input_names, batch=3)), "head": [_feats(rng, 3)]}
    return out, {"image": info_i, "text": info_t, "head": info_h}, calib, evals


MODEL_TYPES = {"image": "cnn", "text": "transformer", "head": "head"}


@pytest.fixture(scope="module")
def int8(graphs):
    out, infos, calib, _ = graphs
    done = {}
    for name in ("image", "text", "head"):
        for precision in ("int8", "int8-trt", "int8-fp16-trt"):
            dst, source = out / f"{name}.{precision}.onnx", get_precision(precision).derives_from  # int8-trt's graph
            src = done[name, source][0] if source else infos[name].file
            done[name, precision] = dst, POLICIES[precision].build(src, dst, calib=calib[name],
                                                                   model_type=MODEL_TYPES[name])
    return done


@pytest.mark.parametrize("name", ["image", "text", "head"])
def test_fp16_cosine(graphs, name):
    out, infos, _, evals = graphs
    dst = out / f"{name}.fp16.onnx"
    POLICIES["fp16"].build(infos[name].file, dst)
    sess = create_session(dst)
    assert all(i.type == "tensor(float)" or i.name in ("input_ids", "attention_mask") for i in sess.get_inputs())
    assert all(o.type == "tensor(float)" for o in sess.get_outputs())
    report = check_reduced_precision(infos[name].file, dst, evals[name], precision="fp16")
    assert report["min_cosine"] >= 0.999 and report["within_threshold"]


@pytest.mark.parametrize("name", ["image", "text", "head"])
def test_int8_trt_is_signed_symmetric(int8, graphs, name):
    path, desc = int8[name, "int8-trt"]
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantizers and desc["quantize_linear"] == len(quantizers)
    for node in model.graph.node:  # every Q and DQ: explicit int8 zero point, all zeros
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any(), node.name
    assert_trt_qdq(path)
    _, infos, _, evals = graphs
    report = check_reduced_precision(infos[name].file, path, evals[name], precision="int8-trt", min_cosine=0.9)
    assert report["min_cosine"] >= 0.9


@pytest.mark.parametrize("name", ["image", "text", "head"])
def test_int8_cpu_has_u8_activations(int8, graphs, name):
    path, desc = int8[name, "int8"]
    summary = qdq_summary(path)
    assert summary["activations"]["count"] > 0
    assert summary["activations"]["zero_point_dtypes"] == {"uint8": summary["activations"]["count"]}
    assert summary["activations"]["per_channel"] == 0
    assert set(summary["weights"]["zero_point_dtypes"]) <= {"int8"} and summary["weights"]["zero_point_values"] == [0]
    assert desc["quantized_nodes"] == summary["quantized_ops"]
    with pytest.raises(ExportError, match="uint8 zero point"):
        assert_trt_qdq(path)
    _, infos, _, evals = graphs
    report = check_reduced_precision(infos[name].file, path, evals[name], precision="int8", min_cosine=0.9)
    assert report["min_cosine"] >= 0.9


@pytest.mark.parametrize("precision", ["int8", "int8-trt"])
def test_a_depthwise_cnn_is_calibrated_on_global_ranges_with_full_bias_correction(int8, precision):
    """EfficientNet-Lite0 (depthwise convs): MINMAX activation ranges and NNCF's full bias correction, recorded
    in the manifest entry and the graph (issue 18 item 6); the transformer and the head keep NNCF's defaults."""
    path, desc = int8["image", precision]
    assert desc["activation_ranges"] == DEPTHWISE_RANGES == qdq_summary(path)["metadata"]["mmedge.activation_ranges"]
    assert desc["bias_correction"].split()[0] in ("full", "off") and "NNCF's full bias correction" in desc["bias_correction"]
    assert all("activation_ranges" not in int8[name, precision][1] for name in ("text", "head"))


def _weight_peaks(path) -> dict[str, int]:
    """The largest |int8 weight| of each MatMul / Gemm and ungrouped Conv weight of a graph (depthwise
    convs run in ONNX Runtime's depthwise kernel, which widens to int32 and cannot saturate)."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {i: n for n in model.graph.node for i in n.input}
    grouped = lambda n: any(a.name == "group" and a.i > 1 for a in n.attribute)  # noqa: E731
    return {n.input[0]: int(np.abs(inits[n.input[0]].astype(np.int16)).max()) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8
            and (user := consumers.get(n.output[0])) is not None and user.op_type in ("Conv", "MatMul", "Gemm")
            and not grouped(user)}


@pytest.mark.parametrize("name", ["image", "text", "head"])
def test_cpu_int8_computes_its_8_bit_weights_exactly(int8, graphs, name):
    """x86 CPUs without VNNI add u8 x s8 products in pairs into int16 (255 * 127 * 2 does not fit); the
    runtime's sessions ask ONNX Runtime for exact kernels there (``session.x64quantprecision``), so the
    CPU graph's full 8-bit weights compute the same fused (this CPU's integer kernels) as written (Q/DQ
    in float), as TensorRT's graph does."""
    path, desc = int8[name, "int8"]
    assert max(_weight_peaks(path).values()) == 127 and "weight_range" not in desc
    assert max(_weight_peaks(int8[name, "int8-trt"][0]).values()) == 127
    fused, as_written = onnx_fn(path), onnx_fn(path, disabled_optimizers=QDQ_AS_FLOAT)
    _, _, _, evals = graphs
    cosines = [row_cosine(fused(case)[out], got) for case in evals[name] for out, got in as_written(case).items()]
    assert min(cosines) >= 0.995, cosines  # without the option an AVX2-only CPU fails this (docs/quantization_notes.md)


def test_text_int8_leaves_embeddings_in_float(int8):
    model = onnx.load(str(int8["text", "int8"][0]))
    producers = {o: n for n in model.graph.node for o in n.output}
    gathers = [n for n in model.graph.node if n.op_type == "Gather"]
    assert gathers and all(producers.get(n.input[0]) is None for n in gathers)  # tables read straight from float


def test_calibration_errors(graphs):
    _, infos, calib, _ = graphs
    text_inputs = infos["text"].inputs
    good = calib["text"][0]
    with pytest.raises(CalibrationError, match="missing inputs \\['attention_mask'\\]"):
        check_calibration([{"input_ids": good["input_ids"]}], text_inputs)
    with pytest.raises(CalibrationError, match="unexpected inputs \\['token_type_ids'\\]"):
        check_calibration([{**good, "token_type_ids": good["input_ids"]}], text_inputs)
    with pytest.raises(CalibrationError, match="'input_ids' is int32.*int64"):
        check_calibration([{**good, "input_ids": good["input_ids"].astype(np.int32)}], text_inputs)
    with pytest.raises(CalibrationError, match="rank 1"):
        check_calibration([{k: v[0] for k, v in good.items()}], text_inputs)
    pix = calib["image"][0]["pixel_values"]
    with pytest.raises(CalibrationError, match="axis 2"):
        check_calibration([{"pixel_values": pix[:, :, :64]}], infos["image"].inputs)
    with pytest.raises(CalibrationError, match="empty"):
        check_calibration([], text_inputs)
    with pytest.raises(CalibrationError, match="lacks inputs"):
        list(calibration_batches([{"input_ids": good["input_ids"][0]}], ["input_ids", "attention_mask"]))


def test_calibration_batches_stack_and_select():
    samples = [{"a": np.full(3, i, np.float32), "b": np.zeros(2), "unused": np.ones(1)} for i in range(5)]
    batches = list(calibration_batches(samples, ["a", "b"], batch=2))
    assert [b["a"].shape for b in batches] == [(2, 3), (2, 3), (1, 3)] and set(batches[0]) == {"a", "b"}
    with pytest.warns(UserWarning, match="only 5 samples"):
        check_calibration(batches, [{"name": "a", "dtype": "float32", "shape": ["batch", 3]},
                                    {"name": "b", "dtype": "float64", "shape": ["batch", 2]}])


# -- int8-fp16-trt: the TensorRT Q/DQ graph with float16 outside Q/DQ (no engine built here) -------


def test_int8_fp16_trt_is_a_precision_labelled_simulated():
    assert "int8-fp16-trt" in export_precisions() and POLICIES["int8-fp16-trt"].target == "tensorrt"
    assert get_precision("int8-fp16-trt").derives_from == "int8-trt"  # converted, not calibrated again
    assert "simulated on ONNX Runtime" in measured_on("int8-fp16-trt")
    assert get_precision("int8-fp16-trt").ort_disabled_optimizers == ("WeightBiasQuantization", *QDQ_AS_FLOAT)
    assert get_precision("int8-trt").ort_disabled_optimizers == QDQ_AS_FLOAT  # simulated as written, like TensorRT
    assert get_precision("int8").ort_disabled_optimizers == get_precision("fp32").ort_disabled_optimizers == ()


@pytest.mark.parametrize("name", ["image", "text", "head"])
def test_int8_fp16_trt_is_s8_symmetric_qdq_around_fp16(int8, graphs, name):
    path, desc = int8[name, "int8-fp16-trt"]
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and desc["quantize_linear"] == sum(n.op_type == "QuantizeLinear" for n in qdq)
    for node in qdq:  # float16 scale, explicit int8 zero point 0
        assert inits[node.input[1]].data_type == onnx.TensorProto.FLOAT16, node.name
        zero_point = numpy_helper.to_array(inits[node.input[2]])
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    assert_trt_qdq(path)
    left = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert not left, left[:5]  # no float32 constant left (unused NNCF scales are dropped)
    io_types = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io_types <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    assert desc["compute"] == "fp16 outside Q/DQ" and desc["scales"] == "fp16"
    _, infos, _, evals = graphs  # ONNX Runtime CPU simulates it (WeightBiasQuantization off)
    half = check_reduced_precision(infos[name].file, path, evals[name], precision="int8-fp16-trt", min_cosine=0.9)
    full = check_reduced_precision(infos[name].file, int8[name, "int8-trt"][0], evals[name], precision="int8-trt",
                                   min_cosine=0.9)
    assert half["min_cosine"] >= 0.9 and half["min_cosine"] >= full["min_cosine"] - 0.02, (half["min_cosine"],
                                                                                          full["min_cosine"])


def test_ort_weight_bias_quantization_breaks_fp16_qdq(int8, graphs):
    """Why that optimizer is off: with it, ORT's int32 bias scale (x_scale * w_scale, computed in
    float16) underflows and the image encoder's features are garbage."""
    path, _ = int8["image", "int8-fp16-trt"]
    _, infos, _, evals = graphs
    feed = evals["image"][0]
    reference = onnx_fn(infos["image"].file)(feed)["image_pooled"].astype(np.float64).ravel()

    def cosine(session) -> float:
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(names, feed)))["image_pooled"].astype(np.float64).ravel()
        return float(got @ reference / np.linalg.norm(got) / np.linalg.norm(reference))

    off = get_precision("int8-fp16-trt").ort_disabled_optimizers
    assert cosine(create_session(path, disabled_optimizers=off)) >= 0.95
    assert cosine(create_session(path)) < 0.9


def test_cpu_int8_text_runs_each_attention_as_one_fused_node(int8):
    """The ONNX Runtime CPU graph of MiniLM: each of its 6 self-attentions is one MultiHeadAttention over one
    packed Q/K/V MatMul (``attention_fusion``); TensorRT's graphs and the cross-attention head keep standard ops."""
    model = onnx.load(str(int8["text", "int8"][0]))
    ops = Counter((n.domain, n.op_type) for n in model.graph.node)
    assert ops[MS_DOMAIN, "MultiHeadAttention"] == 6 and ops["", "Split"] == 6 and not ops["", "Softmax"]
    assert int8["text", "int8"][1]["attention"].startswith("6 self-attentions")
    for key in (("text", "int8-trt"), ("text", "int8-fp16-trt"), ("head", "int8"), ("image", "int8")):
        assert not any(n.domain for n in onnx.load(str(int8[key][0])).graph.node), key
        assert "attention" not in int8[key][1]


def test_attention_fusion_computes_what_the_graph_did(graphs):
    """Fused and packed, MiniLM's fp32 graph gives the same outputs on padded batches of several lengths."""
    out, infos, _, evals = graphs
    model = onnx.load(str(infos["text"].file))
    assert (fuse_attention(model), pack_projections(model)) == (6, 6)
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "text.fused.onnx"))
    before, after = onnx_fn(infos["text"].file), onnx_fn(out / "text.fused.onnx")
    cases = [*evals["text"], *[{k: v[:, :n] for k, v in case.items()} for case in evals["text"] for n in (5, 9)]]
    assert any(case["attention_mask"].min() == 0 for case in cases)  # padding is masked in some rows
    for case in cases:
        want, got = before(case), after(case)
        for name, w in want.items():
            np.testing.assert_allclose(got[name], w, atol=2e-4, rtol=1e-4, err_msg=name)


def test_attention_fusion_leaves_other_graphs_alone(graphs):
    """The cross-attention head's single-head attention is not the multi-head pattern: nothing changes."""
    _, infos, _, _ = graphs
    model = onnx.load(str(infos["head"].file))
    nodes = [n.SerializeToString() for n in model.graph.node]
    assert (fuse_attention(model), pack_projections(model)) == (0, 0)
    assert [n.SerializeToString() for n in model.graph.node] == nodes


def test_int8_dynamic_is_the_fused_graph_with_dynamic_integer_matmuls(graphs):
    """``int8-dynamic`` of MiniLM: each attention and its packed projection one QAttention, every other weight
    MatMul an integer one on inputs quantized per call; it keeps the answers on padded batches. The cross-attention head's weight MatMuls are quantized,
    its attention products (no constant weight) stay float. The CNN has nothing it quantizes: nothing is written."""
    out, infos, _, evals = graphs
    how_text: dict = {}
    for name, floor in (("text", 0.98), ("head", 0.99)):
        dst = out / f"{name}.int8-dynamic.onnx"
        how = POLICIES["int8-dynamic"].build(infos[name].file, dst, model_type=MODEL_TYPES[name])
        how_text = how if name == "text" else how_text
        ops = Counter((n.domain, n.op_type) for n in onnx.load(str(dst)).graph.node)
        assert ops["", "MatMulInteger"] == how["quantized_nodes"]["MatMul"] > 0
        assert ops[MS_DOMAIN, "QAttention"] == how["quantized_nodes"]["Attention"]
        assert ops["", "DynamicQuantizeLinear"] == how["dynamic_quantize_linear"] > 0
        assert not ops["", "QuantizeLinear"], "no calibrated quantizer: inputs are quantized per call"
        report = check_reduced_precision(infos[name].file, dst, evals[name], precision="int8-dynamic")
        assert report["min_cosine"] >= floor and report["within_threshold"], (name, report["min_cosine"])
    assert ops["", "MatMul"] > 0  # the head's attention products, on two activations
    text = Counter((n.domain, n.op_type) for n in onnx.load(str(out / "text.int8-dynamic.onnx")).graph.node)
    assert text[MS_DOMAIN, "QAttention"] == 6 and not text[MS_DOMAIN, "MultiHeadAttention"]
    assert not text["", "Softmax"] and not text["", "MatMul"]
    assert "word_embeddings" in how_text["embedding_tables"]  # s8 per row, as int8 stores it
    with pytest.raises(NothingToQuantize, match="has neither"):
        POLICIES["int8-dynamic"].build(infos["image"].file, out / "image.int8-dynamic.onnx", model_type="cnn")
    assert not (out / "image.int8-dynamic.onnx").exists()
