"""A micro bundle for fuzzing: the real bundle layout, manifest, tokenizer and preprocessing, with
tiny ONNX graphs (a few hundred bytes each), so that opening it and starting a Session take
milliseconds and a fuzzer can try hundreds of thousands of cases.

Built with ``onnx.helper`` and ``mmedge.export.bundle_writer.write_bundle`` (needs ``onnx``; the
runtime itself never does). Three modalities (audio optional), two members, four labels.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from mmedge import BUNDLE_FORMAT, __version__
from mmedge.runtime.specs import AudioSpec, ImageSpec, TextSpec, spec_to_dict

__all__ = ["build_micro_bundle", "LABELS"]

LABELS = ["cat", "dog", "bird", "fish"]
IMAGE = ImageSpec(size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
TEXT, AUDIO = TextSpec(max_length=8, lowercase=True), AudioSpec(sample_rate=16000, clip_seconds=0.25, n_mels=16)
WORDS = ["a", "the", "cat", "dog", "bird", "fish", "seven", "photo", "of"]


def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str()


def _tensor(name: str, shape: list, dtype: str = "float32") -> dict:
    return {"name": name, "dtype": dtype, "shape": shape}


def _save(model, path: Path) -> None:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _model(nodes, inputs, outputs, inits):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _pool_encoder(path: Path, name: str, out: str, shape: list) -> int:
    """(B, C, H, W) -> GlobalAveragePool -> (B, C)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("GlobalAveragePool", [name], ["p"]), helper.make_node("Flatten", ["p"], [out])]
    _save(_model(nodes, [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
                 [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", shape[1]])], []), path)
    return shape[1]


def _text_encoder(path: Path, rng: np.random.Generator) -> int:
    """input_ids, attention_mask (B, T) -> masked mean of a (V, 4) embedding -> (B, 4)."""
    from onnx import TensorProto, helper, numpy_helper

    emb = numpy_helper.from_array(rng.standard_normal((len(WORDS) + 2, 4)).astype(np.float32), "emb")
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis")
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "two"], ["m3"]),
             helper.make_node("Mul", ["e", "m3"], ["em"]),
             helper.make_node("ReduceSum", ["em", "axis"], ["s"], keepdims=0),
             helper.make_node("ReduceSum", ["m", "axis"], ["n"], keepdims=1),
             helper.make_node("Max", ["n", "one"], ["n1"]),
             helper.make_node("Div", ["s", "n1"], ["text_pooled"])]
    inits = [emb, axis, numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([1.0], np.float32), "one")]
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"]) for n in ("input_ids", "attention_mask")]
    _save(_model(nodes, ins, [helper.make_tensor_value_info("text_pooled", TensorProto.FLOAT, ["batch", 4])], inits),
          path)
    return 4


def _head(path: Path, inputs: dict[str, int], rng: np.random.Generator) -> None:
    """concat(features) @ W + b -> logits (B, len(LABELS))."""
    from onnx import TensorProto, helper, numpy_helper

    width = sum(inputs.values())
    inits = [numpy_helper.from_array(rng.standard_normal((width, len(LABELS))).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(len(LABELS)).astype(np.float32), "b")]
    nodes = [helper.make_node("Concat", list(inputs), ["x"], axis=1), helper.make_node("MatMul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["logits"])]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", d]) for n, d in inputs.items()]
    _save(_model(nodes, ins, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)])],
                 inits), path)


def _encoders(work: Path, rng: np.random.Generator) -> tuple[dict, dict[str, int]]:
    dims = {"image_pooled": _pool_encoder(work / "encoders/image.fp32.onnx", "pixel_values", "image_pooled",
                                          ["batch", 3, IMAGE.size, IMAGE.size]),
            "text_pooled": _text_encoder(work / "encoders/text.fp32.onnx", rng),
            "audio_pooled": _pool_encoder(work / "encoders/audio.fp32.onnx", "mel", "audio_pooled",
                                          ["batch", 1, AUDIO.n_mels, AUDIO.n_frames])}
    io = {"image": ([_tensor("pixel_values", ["batch", 3, IMAGE.size, IMAGE.size])], "image_pooled"),
          "text": ([_tensor("input_ids", ["batch", "tokens"], "int64"),
                    _tensor("attention_mask", ["batch", "tokens"], "int64")], "text_pooled"),
          "audio": ([_tensor("mel", ["batch", 1, AUDIO.n_mels, AUDIO.n_frames])], "audio_pooled")}
    entries = {m: {"name": f"micro_{m}", "inputs": ins, "outputs": [_tensor(out, ["batch", dims[out]])],
                   "graphs": {"fp32": {"file": f"encoders/{m}.fp32.onnx", "status": "ok"}}}
               for m, (ins, out) in io.items()}
    return entries, dims


def build_micro_bundle(out: Path, *, seed: int = 0) -> Path:
    """Writes the micro bundle folder ``out`` (replaced if it exists) and returns it."""
    from mmedge.export.bundle_writer import write_bundle

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        encoders, dims = _encoders(work, rng)
        members = []
        for name, mods, weight, temp in (("concat", ("image", "text"), 0.7, 1.2), ("all", ("image", "text", "audio"),
                                                                                   0.3, 0.9)):
            inputs = {f"{m}_pooled": dims[f"{m}_pooled"] for m in mods}
            _head(work / f"heads/{name}.fp32.onnx", inputs, rng)
            members.append({"name": name, "head": "concat", "modalities": list(mods), "inputs": list(inputs),
                            "output": "logits", "temperature": temp, "weight": weight,
                            "graphs": {"fp32": {"file": f"heads/{name}.fp32.onnx", "status": "ok"}}})
        (work / "tokenizer.json").write_text(_tokenizer_json())
        manifest = {"format": BUNDLE_FORMAT, "name": "micro", "task": "classification", "labels": LABELS,
                    "modalities": ["image", "text", "audio"], "optional_modalities": ["audio"],
                    "inputs": {"image": spec_to_dict(IMAGE), "text": spec_to_dict(TEXT), "audio": spec_to_dict(AUDIO)},
                    "encoders": encoders, "members": members,
                    "ensemble": {"method": "weighted_mean", "weights": [0.7, 0.3], "temperatures": [1.2, 0.9]},
                    "precisions": {"fp32": "ok"}, "metrics": {}, "versions": {"mmedge": __version__}}
        files = {f"{d}/{p.name}": p for d in ("encoders", "heads") for p in (work / d).glob("*.onnx")}
        files["tokenizer.json"] = work / "tokenizer.json"
        return write_bundle(Path(out), manifest, files)
