"""The Python-backend steps of a generated repository, and the pbtxt writer, without a server."""
import json
import re

import numpy as np
import pytest

from mmedge.errors import ConfigError
from mmedge.runtime.specs import spec_to_dict
from mmedge.serve.pbtxt import Enum, string_parameters, tensor, to_pbtxt
from mmedge.serve.steps import Combine, OnnxGraph, Preprocess, create_step


def test_pbtxt_writer():
    text = to_pbtxt({"name": "m", "max_batch_size": 4, "skip": None,
                     "input": [tensor("text", "BYTES", [1]), tensor("x", "FP32", [3, -1])],
                     "instance_group": [{"count": 2, "kind": Enum("KIND_CPU")}],
                     "parameters": string_parameters({"spec": '{"a": "b\\n"}'})})
    assert 'name: "m"' in text and "skip" not in text and "data_type: TYPE_STRING" in text
    assert "dims: [3, -1]" in text and "kind: KIND_CPU" in text
    assert 'string_value: "{\\"a\\": \\"b\\\\n\\"}"' in text


def test_steps_reproduce_the_session(session, bundle_path, tmp_path, rng):
    bundle = session.bundle
    images = rng.integers(0, 256, (2, 30, 20, 3), dtype=np.uint8)
    texts = np.array([[b"a photo of a digit"], [b"seven"]], dtype=object)
    pixels = Preprocess("image", spec_to_dict(bundle.specs["image"]), {"x": "pixel_values"}, tmp_path)(
        {"image": images})["x"]
    tokens = Preprocess("text", spec_to_dict(bundle.specs["text"]), {"input_ids": "input_ids",
                        "attention_mask": "attention_mask"}, bundle.root)({"text": texts})
    feats = OnnxGraph(bundle.graph_path("encoder.image", "fp32"))({"pixel_values": pixels})
    feats.update(OnnxGraph(bundle.graph_path("encoder.text", "fp32"))(tokens))
    concat = bundle.member("concat")
    logits = OnnxGraph(bundle.graph_path("head.concat", "fp32"))({n: feats[n] for n in concat.inputs})["logits"]
    out = Combine(bundle.ensemble.method, list(bundle.labels),
                  [{"name": "concat", "weight": concat.weight, "temperature": concat.temperature}],
                  [m.name for m in bundle.members], "test", "fp32")({"logits.concat": logits})
    pred = session.predict(image=list(images), text=["a photo of a digit", "seven"])
    np.testing.assert_allclose(out["probabilities"], pred.probabilities, atol=1e-5)
    assert out["label"][:, 0].tolist() == [lb.encode() for lb in pred.labels]


def test_create_step_refuses_unknown_steps(tmp_path):
    with pytest.raises(ConfigError, match="regenerate"):
        create_step({"step": "nope"}, tmp_path)


def test_audio_preprocessing_names_its_output_from_the_spec(tmp_path):
    """A raw-waveform bundle's step gives ``waveform`` (the spec's front end), a log-mel one ``mel``."""
    from mmedge.runtime.audio import preprocess_audio
    from mmedge.runtime.specs import AudioSpec

    rows = {"audio": np.full((2, 8000), 0.1, np.float32), "audio_rate": np.array([[8000], [8000]], np.int32)}
    for front_end, name, shape in (("waveform", "waveform", (2, 16000)), ("log_mel", "mel", (2, 1, 64, 101))):
        spec = AudioSpec(sample_rate=16000, clip_seconds=1.0, front_end=front_end, normalize=front_end == "waveform")
        out = Preprocess("audio", spec_to_dict(spec), {name: name}, tmp_path)(rows)
        assert list(out) == [name] and out[name].shape == shape
        want = preprocess_audio([(w, 8000) for w in rows["audio"]], spec)
        np.testing.assert_array_equal(out[name], want)


def test_python_graph_models_keep_the_precisions_onnx_runtime_settings(bundle_path, tmp_path, tools, rng):
    """A graph entry's ``ort_disabled_optimizers`` (int8-fp16-trt's WeightBiasQuantization) reaches the
    Python-backend graph runner, as ``Session`` applies it in-process, and the graph still matches the session."""
    from mmedge.runtime import Session
    from mmedge.serve.model_repository import RepositoryConfig, write_repository

    folder = tools.clone(bundle_path, tmp_path / "b")
    tools.edit_manifest(folder, lambda m: m["encoders"]["image"]["graphs"]["fp32"].update(
        ort_disabled_optimizers=["ConstantFolding"]))
    write_repository(folder, tmp_path / "repo", RepositoryConfig(graph_backend="python"))
    model = tmp_path / "repo" / "mmedge.encoder.image"
    text = (model / "config.pbtxt").read_text()
    params = dict(re.findall(r'key: "(\w+)"\s*value \{\s*string_value: ("(?:[^"\\]|\\.)*")', text))
    params = {k: json.loads(v) for k, v in params.items()}  # pbtxt strings are JSON strings (pbtxt.py)
    assert params["precision"] == "fp32" and json.loads(params["disabled_optimizers"]) == ["ConstantFolding"]
    step = create_step(params, model / "1")
    assert step.disabled_optimizers == ("ConstantFolding",)
    with Session(folder, threads=1) as session:  # the edited bundle opens and runs in-process with it off
        assert session.predict(image=list(rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)), text=["a", "b"]).labels
        size = session.bundle.specs["image"].size
        pixels = rng.standard_normal((2, 3, size, size)).astype(np.float32)
        plain = OnnxGraph(session.bundle.graph_path("encoder.image", "fp32"))({"pixel_values": pixels})
    got = step({"pixel_values": pixels})
    assert set(got) == set(plain)
    for name, value in plain.items():
        np.testing.assert_allclose(got[name], value, atol=1e-5)
