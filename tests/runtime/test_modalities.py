"""Modalities and resize modes are records: adding one is one registration (issue 16).

A toy resize mode runs through ``preprocess_images`` and the manifest schema; a toy fourth modality
(a feature vector) runs through the manifest schema, a ``Session`` (planning, preprocessing, graph
checks, the ensemble), the serving contract and the request decoder, with nothing else edited.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytest

from mmedge.errors import BundleError, InputError
from mmedge.runtime import Bundle, Session
from mmedge.runtime.manifest_schema import ranged
from mmedge.runtime.modalities import (MODALITIES, InputOptions, Modality, TensorSpec, get_modality, modality_names,
                                       register_modality)
from mmedge.runtime.preprocess import RESIZE_MODES, ResizeMode, preprocess_images, register_resize_mode
from mmedge.runtime.specs import ImageSpec, spec_from_dict, spec_to_dict
from mmedge.serve.protocol import decode_request, input_specs


# -- a resize mode ---------------------------------------------------------------------------


def _top_left(image: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Crops the top-left S x S (zero-padded): a mode no interpolation gives."""
    size = spec.size
    out = np.zeros((size, size, 3), np.uint8)
    crop = image[:size, :size]
    out[:crop.shape[0], :crop.shape[1]] = crop
    return out


@pytest.fixture
def top_left():
    mode = register_resize_mode(ResizeMode("top_left", _top_left, "crop the top-left S x S"))
    yield mode
    RESIZE_MODES.unregister(mode.name)


def test_a_registered_resize_mode_runs_in_preprocessing_and_the_schema(top_left, bundle_path, tmp_path, tools):
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    spec = ImageSpec(size=4, resize="top_left", mean=(0.0,) * 3, std=(1.0,) * 3)
    out = preprocess_images([image], spec)  # (1, 3, 4, 4)
    np.testing.assert_allclose(out[0], image[:4, :4].transpose(2, 0, 1) / 255.0, atol=1e-6)
    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m["inputs"]["image"].update(resize="top_left"))
    with Bundle.open(folder) as bundle:
        assert bundle.specs["image"].resize == "top_left"


def test_an_unknown_resize_mode_is_refused_by_name(bundle_path, tmp_path, tools):
    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m["inputs"]["image"].update(resize="top_left"))
    with pytest.raises(BundleError, match=r"inputs\.image\.resize.*bilinear"):
        Bundle.open(folder)


# -- a fourth modality -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VectorSpec:
    """A feature vector of ``size`` floats, scaled by ``scale``."""

    size: int = field(metadata={"check": ranged(1, 1024)})
    scale: float = field(default=1.0, metadata={"check": lambda v, p: float(v)})


def _vector_items(value, options, limits):
    items = [value] if isinstance(value, np.ndarray) and value.ndim == 1 else list(value)
    if not items:
        raise InputError("vector= is empty; pass at least one vector")
    return items


def _vectors_from_wire(data, limits):
    return list(np.asarray(data["vector"], dtype=np.float32))


VECTOR = Modality(
    name="vector", spec_class=VectorSpec, split=_vector_items,
    load=lambda items, options, limits: [np.asarray(v, np.float32) for v in items],
    preprocessor=lambda spec, context: lambda samples: {"values": np.stack(samples) * np.float32(spec.scale)},
    encoder_inputs=lambda spec: ("values",), blank=lambda spec: np.zeros(spec.size, np.float32),
    wire=(TensorSpec("vector", np.float32, (-1,)),), from_wire=_vectors_from_wire,
    to_wire=lambda samples: {"vector": np.stack(samples)}, cli_help="A feature vector.")
W = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [0.0, -1.0, 1.0], [2.0, 0.0, 0.5]], np.float32)  # (4, 3)


@pytest.fixture
def vector():
    register_modality(VECTOR)
    yield VECTOR
    MODALITIES.unregister(VECTOR.name)


def _graphs(folder):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    enc = helper.make_graph([helper.make_node("Identity", ["values"], ["vector_pooled"])], "encoder",
                            [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", 4])],
                            [helper.make_tensor_value_info("vector_pooled", TensorProto.FLOAT, ["batch", 4])])
    head = helper.make_graph([helper.make_node("MatMul", ["vector_pooled", "w"], ["logits"])], "head",
                             [helper.make_tensor_value_info("vector_pooled", TensorProto.FLOAT, ["batch", 4])],
                             [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
                             [numpy_helper.from_array(W, "w")])
    files = {}
    for name, graph in (("encoders/vector.fp32.onnx", enc), ("heads/linear.fp32.onnx", head)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, folder / name)
        files[name] = folder / name
    return files


def _vector_bundle(tmp_path):
    from mmedge import BUNDLE_FORMAT
    from mmedge.export.bundle_writer import write_bundle

    tensor = lambda name: {"name": name, "dtype": "float32", "shape": ["batch", 4]}  # noqa: E731
    manifest = {
        "format": BUNDLE_FORMAT, "name": "vectors", "task": "classification", "labels": ["a", "b", "c"],
        "modalities": ["vector"], "inputs": {"vector": spec_to_dict(VectorSpec(size=4, scale=2.0))},
        "encoders": {"vector": {"name": "identity", "inputs": [tensor("values")], "outputs": [tensor("vector_pooled")],
                                "graphs": {"fp32": {"file": "encoders/vector.fp32.onnx", "status": "ok"}}}},
        "members": [{"name": "linear", "head": "linear", "modalities": ["vector"], "inputs": ["vector_pooled"],
                     "output": "logits", "weight": 1.0, "temperature": 1.0,
                     "graphs": {"fp32": {"file": "heads/linear.fp32.onnx", "status": "ok"}}}],
        "ensemble": {"method": "weighted_mean"}, "precisions": {"fp32": "ok"}}
    return write_bundle(tmp_path / "bundle", manifest, _graphs(tmp_path / "src"))


def test_a_registered_modality_runs_through_a_session(vector, tmp_path):
    assert modality_names()[-1] == "vector" and get_modality("vector") is VECTOR
    x = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]], np.float32)
    with Session(_vector_bundle(tmp_path), threads=1) as session:
        assert session.bundle.specs["vector"] == VectorSpec(size=4, scale=2.0)
        pred = session.predict(vector=list(x))
        with pytest.raises(InputError, match=r"takes \['vector'\]; it has no \['text'\]"):
            session.predict(text="a")
    logits = (x * 2.0) @ W
    want = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(pred.probabilities, want / want.sum(1, keepdims=True), atol=1e-5)
    assert pred.labels == [["a", "b", "c"][i] for i in logits.argmax(1)]
    assert {"preprocess.vector", "encoder.vector", "head.linear", "ensemble"} <= set(pred.timings_ms)


def test_a_registered_modality_is_in_the_serving_contract(vector):
    assert [t.name for t in input_specs()][-1] == "vector"
    rows = decode_request({"vector": np.ones((2, 4), np.float32)})
    assert rows.modalities == ("vector",) and rows.size == 2
    assert VECTOR.prepare([np.ones(4)], InputOptions())[0].dtype == np.float32


def test_an_unregistered_modality_is_refused_by_name(vector, tmp_path, session):
    path = _vector_bundle(tmp_path)
    MODALITIES.unregister("vector")
    try:
        with pytest.raises(BundleError, match=r"modalities\[0\].*'vector'"):
            Bundle.open(path)
        with pytest.raises(InputError, match=r"unknown input.*vector.*\['image', 'text', 'audio'\]"):
            session.predict(vector=[1.0])
    finally:
        register_modality(VECTOR)


def test_specs_have_no_model_defaults_and_old_manifests_still_read():
    with pytest.raises(TypeError):
        ImageSpec(size=64)  # mean/std are the model's own: no EfficientNet defaults
    old = {"sample_rate": 16000, "clip_seconds": 1.0, "n_fft": 512, "win_length": 400, "hop_length": 160,
           "n_mels": 64, "fmin": 20.0, "fmax": 8000.0}  # written before front_end / normalize existed
    spec = spec_from_dict(get_modality("audio").spec_class, old)
    assert (spec.front_end, spec.normalize) == ("log_mel", False)
    assert dataclasses.asdict(spec) == {**old, "front_end": "log_mel", "normalize": False, "padding": "center"}


def test_a_spec_without_the_models_numbers_is_refused_by_name(bundle_path, tmp_path, tools):
    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m["inputs"]["image"].pop("mean"))
    with pytest.raises(BundleError, match=r"inputs\.image.*lacks the required key 'mean'.*re-export"):
        Bundle.open(folder)


def test_a_recipe_written_before_still_reads():
    from mmedge.config import LITE0_IMAGE, MINILM_TEXT, Recipe, get_recipe

    old = get_recipe("digits-match").to_dict()
    old["audio"] = {"sample_rate": 16000, "clip_seconds": 1.0, "n_fft": 512, "win_length": 400, "hop_length": 160,
                    "n_mels": 64, "fmin": 20.0, "fmax": 8000.0}  # older recipe.json files held every modality's spec
    recipe = Recipe.from_dict(old)
    assert recipe.specs == {"image": LITE0_IMAGE, "text": MINILM_TEXT} and recipe.image == LITE0_IMAGE
