"""The manifest schema: every wrong type, range or reference is a ``BundleError`` naming its JSON path,
raised at ``Bundle.open`` (issue 11, "manifest of the wrong JSON types" and "silent wrong answers")."""
from __future__ import annotations

import math

import pytest

from mmedge.errors import BundleError
from mmedge.runtime import Bundle, Session


def _set(path, value):
    """An edit that sets ``manifest[path...] = value``."""
    def edit(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _drop_audio(m):
    m["modalities"] = ["image", "text"]
    m["optional_modalities"] = []
    del m["inputs"]["audio"], m["encoders"]["audio"]


# (edit, the JSON path the error must name)
WRONG_TYPES = [
    (_set(["modalities"], 3), "modalities"),
    (_set(["encoders", "image"], []), "encoders.image"),
    (_set(["ensemble"], []), "ensemble"),
    (_set(["encoders", "image", "graphs", "fp32"], "image.onnx"), "encoders.image.graphs.fp32"),
    (_set(["ensemble", "weights"], 1), "ensemble.weights"),
    (_set(["ensemble", "temperatures"], ["x", 1.0]), "ensemble.temperatures[0]"),
    (_set(["precisions"], "ok"), "precisions"),
    (lambda m: m["encoders"]["image"]["inputs"][0].update(shape=3), "encoders.image.inputs[0].shape"),
    (lambda m: m["encoders"]["text"]["outputs"][0].update(name=7), "encoders.text.outputs[0].name"),
    (_set(["labels"], "zero one"), "labels"),
    (_set(["labels"], [0, 1, 2]), "labels[0]"),
    (_set(["members"], {"concat": {}}), "members"),
    (lambda m: m["members"][0].update(modalities="image"), "members[0].modalities"),
    (lambda m: m["members"][1].update(graphs=[]), "members[1].graphs"),
    (_set(["files"], ["encoders/image.fp32.onnx"]), "files"),
    (_set(["inputs", "text", "max_length"], "16"), "inputs.text.max_length"),
    (_set(["inputs", "image", "size"], True), "inputs.image.size"),
    (_set(["optional_modalities"], "audio"), "optional_modalities"),
    (_set(["name"], ["x"]), "name"),
]

BAD_VALUES = [
    (_set(["ensemble", "method"], "bogus"), "ensemble.method"),
    (_set(["ensemble", "temperatures"], [0.0, 1.0]), "ensemble.temperatures[0]"),
    (_set(["ensemble", "temperatures"], [1.0, -2.0]), "ensemble.temperatures[1]"),
    (_set(["ensemble", "weights"], [math.nan, 1.0]), "ensemble.weights[0]"),
    (_set(["ensemble", "weights"], [0.0, 0.0]), "ensemble.weights"),
    (_set(["ensemble", "weights"], [1.0, -1.0]), "ensemble.weights[1]"),
    (_set(["ensemble", "weights"], [1.0]), "ensemble.weights"),
    (lambda m: m["members"][0].update(temperature=math.inf), "members[0].temperature"),
    (_set(["inputs", "image", "std"], [0.5, 0.0, 0.5]), "inputs.image.std[1]"),
    (_set(["inputs", "image", "std"], [0.5, 0.5]), "inputs.image.std"),
    (_set(["inputs", "image", "mean"], [0.5, math.nan, 0.5]), "inputs.image.mean[1]"),
    (_set(["inputs", "image", "resize"], "bicubic-ish"), "inputs.image.resize"),
    (_set(["inputs", "image", "size"], 0), "inputs.image.size"),
    (_set(["inputs", "text", "max_length"], 0), "inputs.text.max_length"),
    (_set(["inputs", "audio", "sample_rate"], 0), "inputs.audio.sample_rate"),
    (_set(["inputs", "audio", "fmax"], 1e9), "inputs.audio.fmax"),
    (_set(["inputs", "audio", "hop_length"], 0), "inputs.audio.hop_length"),
    (_set(["inputs", "audio", "clip_seconds"], math.nan), "inputs.audio.clip_seconds"),
    (_set(["inputs", "audio", "n_mels"], 4000), "inputs.audio.n_mels"),
    (_set(["task"], "detection"), "task"),
    (_set(["labels"], ["a", "a", "b"]), "labels"),
    (_set(["modalities"], ["image", "image", "text", "audio"]), "modalities"),
    (lambda m: m["encoders"]["image"]["graphs"]["fp32"].update(sha256="abc"), "encoders.image.graphs.fp32.sha256"),
    (lambda m: m["encoders"]["image"]["graphs"]["fp32"].update(bytes=-1), "encoders.image.graphs.fp32.bytes"),
    # a member reading an encoder output it does not declare (concat runs on image+text only)
    (lambda m: m["members"][0].update(inputs=["image_pooled", "audio_pooled"]), "members[0].inputs[1]"),
    (lambda m: m["members"][0].update(inputs=["image_pooled", "video_pooled"]), "members[0].inputs[1]"),
    # a member whose modality the bundle lacks
    (_drop_audio, "members[1].modalities[2]"),
    (lambda m: m["members"][0].update(modalities=["image", "video"]), "members[0].modalities[1]"),
    (lambda m: m["members"][1].update(name="concat"), "members[1].name"),
]

ESCAPES = [
    (lambda m: m["encoders"]["image"]["graphs"]["fp32"].update(file="../image.onnx"),
     "encoders.image.graphs.fp32.file"),
    (lambda m: m["encoders"]["image"]["graphs"]["fp32"].update(file="/etc/passwd"),
     "encoders.image.graphs.fp32.file"),
    (lambda m: m["members"][0]["graphs"]["fp32"].update(file="heads\\..\\..\\x.onnx"), "members[0].graphs.fp32.file"),
    (_set(["inputs", "text", "tokenizer_file"], "../tokenizer.json"), "inputs.text.tokenizer_file"),
    (lambda m: m["files"].update({"/tmp/x": "0" * 64}), 'files["/tmp/x"]'),
]


@pytest.fixture
def folder(bundle_path, tmp_path, tools):
    return tools.clone(bundle_path, tmp_path / "b")


@pytest.mark.parametrize("edit, where", WRONG_TYPES + BAD_VALUES + ESCAPES,
                         ids=[w for _, w in WRONG_TYPES + BAD_VALUES + ESCAPES])
@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_bad_manifest_is_a_bundle_error_naming_the_path(folder, tools, edit, where, verify):
    tools.edit_manifest(folder, edit)
    with pytest.raises(BundleError) as err:
        Bundle.open(folder, verify=verify)
    message = str(err.value)
    assert f"at {where}:" in message, message
    assert "re-export" in message  # what to do


def test_newer_format_names_the_version_it_needs(folder, tools):
    tools.edit_manifest(folder, lambda m: (m.update(format="mmedge.bundle/2"), m["versions"].update(mmedge="0.4.0")))
    with pytest.raises(BundleError) as err:
        Bundle.open(folder)
    message = str(err.value)
    assert "mmedge.bundle/2" in message and "0.4.0" in message and "pip install" in message


def test_fewer_labels_than_logits_is_refused_when_the_session_starts(folder, tools):
    tools.edit_manifest(folder, lambda m: m.update(labels=m["labels"][:4]))
    with pytest.raises(BundleError, match=r"4 labels.*10 classes"):
        Session(folder, threads=1)


def test_valid_bundle_still_opens(bundle_path):
    with Bundle.open(bundle_path) as b:
        assert b.labels[0] == "zero" and b.ensemble.method == "weighted_mean"


@pytest.mark.parametrize("edit", [_set(["inputs", "audio", "n_mels"], 32), _set(["inputs", "text", "lowercase"], 1)])
def test_input_spec_that_does_not_fit_the_graph_is_refused(folder, tools, edit):
    tools.edit_manifest(folder, edit)
    with pytest.raises(BundleError, match=r"inputs\.|encoder\.audio.*input spec"):
        Session(folder, threads=1)
