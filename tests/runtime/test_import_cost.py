"""What importing the runtime and opening a Session load: only what the bundle needs (issue 18 item 7).

Each check runs in a fresh interpreter (``sys.modules`` of this test process already holds
everything), and names the libraries found loaded there.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

# Libraries the runtime must load only for the bundles, modalities or backends that need them.
WATCHED = ("torch", "onnx", "nncf", "onnxruntime", "cv2", "tokenizers", "soundfile", "PIL", "scipy", "openvino",
           "tensorrt")

_IMPORT = """
import json, sys
import mmedge.runtime
from mmedge.runtime import Bundle, Prediction, Session
import mmedge.runtime.session
print(json.dumps({"loaded": [m for m in json.loads(sys.argv[1]) if m in sys.modules]}))
"""

_OPEN = """
import json, sys
import numpy as np
from mmedge.runtime import Session
with Session(sys.argv[2], backend=sys.argv[3], threads=1) as session:
    frame = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    label = session.predict(image=[frame], **json.loads(sys.argv[4])).label
    print(json.dumps({"loaded": [m for m in json.loads(sys.argv[1]) if m in sys.modules],
                      "backend": session.backend, "label": label}))
"""


def _child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, json.dumps(WATCHED), *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_runtime_loads_no_backend_or_preprocessing_library():
    assert _child(_IMPORT)["loaded"] == []


_TEXT_AND_AUDIO = """
import json, sys
import numpy as np
from mmedge.runtime import Bundle
from mmedge.runtime.audio import preprocess_audio
from mmedge.runtime.preprocess import TextTokenizer, preprocess_images
bundle = Bundle.open(sys.argv[2])
TextTokenizer(bundle.tokenizer_path, bundle.specs["text"])(["a small cat"])
preprocess_audio([np.zeros(16000, np.float32)], bundle.specs["audio"])
before = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
preprocess_images([np.zeros((48, 80, 3), np.uint8)], bundle.specs["image"])
print(json.dumps({"loaded": before, "after_image": [m for m in json.loads(sys.argv[1]) if m in sys.modules]}))
"""


def test_text_and_audio_work_loads_no_opencv(bundle_path):
    """A bundle's manifest, its text and its audio need no OpenCV (15 MiB, measured); images load it."""
    out = _child(_TEXT_AND_AUDIO, str(bundle_path))
    assert "cv2" not in out["loaded"] and "tokenizers" in out["loaded"]
    assert "cv2" in out["after_image"]


def _linear_head(path, width: int, classes: int) -> None:
    """A real fusion head graph over the image alone: ``image_pooled (batch, width) -> logits (batch, classes)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((width, classes)) * 0.05).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(classes, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["image_pooled", "w", "b"], ["logits"])], "image_linear",
        [helper.make_tensor_value_info("image_pooled", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], [weight, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9), path)


@pytest.fixture(scope="module")
def image_only(bundle_path, tools, tmp_path_factory):
    """The fixture bundle reduced to its image encoder and one linear head over it."""
    folder = tools.clone(bundle_path, tmp_path_factory.mktemp("image-only") / "bundle")
    for rel in ("encoders/text.fp32.onnx", "encoders/audio.fp32.onnx", "tokenizer.json"):
        (folder / rel).unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    width = manifest["encoders"]["image"]["outputs"][0]["shape"][1]
    _linear_head(folder / "heads/image_linear.fp32.onnx", width, len(manifest["labels"]))
    data = (folder / "heads/image_linear.fp32.onnx").read_bytes()
    entry = {"file": "heads/image_linear.fp32.onnx", "status": "ok", "opset": 20, "ort_disabled_optimizers": [],
             "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    def edit(m):
        m.update(modalities=["image"], optional_modalities=[], inputs={"image": m["inputs"]["image"]},
                 encoders={"image": m["encoders"]["image"]})
        m["members"] = [{"name": "linear", "head": "concat", "modalities": ["image"], "inputs": ["image_pooled"],
                         "output": "logits", "temperature": 1.0, "weight": 1.0, "graphs": {"fp32": entry}}]
        m["metrics"] = {"validation": {"split": "val", "samples": 10, "members": {"linear": 0.5}}}
        m["files"] = {rel: sha for rel, sha in m["files"].items() if rel.startswith("encoders/image.")}
        m["files"][entry["file"]] = entry["sha256"]
    tools.edit_manifest(folder, edit)
    return folder


@pytest.mark.parametrize("backend", ["ort", "auto"])
def test_a_session_on_an_image_only_bundle_loads_no_text_or_audio_library(image_only, backend):
    out = _child(_OPEN, str(image_only), backend, "{}")
    assert out["backend"] == "ort" and out["label"] in json.loads((image_only / "manifest.json").read_text())["labels"]
    assert "onnxruntime" in out["loaded"]  # it ran
    assert not {"tokenizers", "soundfile", "openvino", "torch", "onnx", "nncf"} & set(out["loaded"]), out["loaded"]


def test_auto_loads_no_backend_it_would_not_take(bundle_path):
    """The fixture's graphs were not verified on OpenVINO at export: ``auto`` passes over OpenVINO's rows
    without importing openvino (and probing its devices), installed or not."""
    out = _child(_OPEN, str(bundle_path), "auto", json.dumps({"text": ["a cat"]}))
    assert out["backend"] == "ort" and "tokenizers" in out["loaded"]
    assert "openvino" not in out["loaded"] and "tensorrt" not in out["loaded"]
