"""Shared fixtures: a small REAL bundle, built once per test session (runtime, bench, e2e tests).

Real encoders (EfficientNet-Lite0 with ImageNet weights, all-MiniLM-L6-v2, a randomly
initialised audio CNN) and two seeded fusion heads (concat over image+text,
cross-attention over image+text+audio), exported with ``mmedge.export.onnx_export`` and
assembled with ``mmedge.export.bundle_writer.write_bundle``. Audio is declared optional, so
without audio only the concat member runs.
"""
from __future__ import annotations

import json
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from mmedge import BUNDLE_FORMAT, __version__
from mmedge.runtime.audio import preprocess_audio
from mmedge.runtime.preprocess import TextTokenizer, preprocess_images
from mmedge.runtime.specs import AudioSpec, ImageSpec, TextSpec, spec_to_dict

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MEMBERS = (  # name, head, modalities, weight, temperature
    ("concat", "concat", ("image", "text"), 0.6, 1.3),
    ("cross_attention", "cross_attention", ("image", "text", "audio"), 0.4, 0.8),
)
IMAGE_SPEC = ImageSpec(size=64, mean=(0.498,) * 3, std=(0.502,) * 3)  # EfficientNet-Lite0's normalisation
TEXT_SPEC = TextSpec(max_length=16, lowercase=True)
AUDIO_SPEC = AudioSpec(sample_rate=16000, clip_seconds=1.0)


def _example_inputs(tokenizer: TextTokenizer) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(2)]
    waves = [rng.standard_normal(16000).astype(np.float32) * 0.1 for _ in range(2)]
    return {
        "image": {"pixel_values": preprocess_images(images, IMAGE_SPEC)},
        "text": tokenizer(["a photo of a digit", "seven"]),
        "audio": {"mel": preprocess_audio(waves, AUDIO_SPEC)},
    }


def _graph_entry(info, rel: str) -> dict:
    return {"file": rel, "status": "ok", "exporter": info.exporter, "opset": info.opset, "ort_disabled_optimizers": []}


def _build_encoders(tmp: Path, tokenizer: TextTokenizer):
    import torch

    from mmedge.encoders import create_encoder, freeze
    from mmedge.export.onnx_export import export_encoder

    torch.manual_seed(0)
    names = {"image": "efficientnet_lite0", "text": "minilm_l6", "audio": "audio_cnn"}
    encoders = {m: freeze(create_encoder(n)) for m, n in names.items()}
    examples = _example_inputs(tokenizer)
    entries, files, feats = {}, {}, {}
    for m, enc in encoders.items():
        rel = f"encoders/{m}.fp32.onnx"
        info = export_encoder(enc, tmp / rel, example_inputs=examples[m])
        files[rel] = tmp / rel
        entries[m] = {"name": names[m], "inputs": info.inputs, "outputs": info.outputs,
                      "graphs": {"fp32": _graph_entry(info, rel)}}
        with torch.no_grad():
            outs = enc(*(torch.from_numpy(examples[m][n]) for n in enc.input_names))
        feats.update({n: o.numpy() for n, o in zip(enc.output_names(), outs)})
    return encoders, entries, files, feats


def _build_heads(tmp: Path, feats: dict[str, np.ndarray]):
    import torch

    from mmedge.export.onnx_export import export_head
    from mmedge.fusion import create_fusion_head

    dims = {"image": 1280, "text": 384, "audio": 128}
    heads, members, files = {}, [], {}
    for i, (name, kind, modalities, weight, temp) in enumerate(MEMBERS):
        torch.manual_seed(100 + i)
        head = create_fusion_head(kind, modalities=list(modalities), dims=dims, num_classes=len(LABELS), hidden=64)
        head.eval()
        rel = f"heads/{name}.fp32.onnx"
        info = export_head(head, tmp / rel, example_feats={n: feats[n] for n in head.input_names()})
        files[rel] = tmp / rel
        heads[name] = head
        members.append({"name": name, "head": kind, "modalities": list(modalities),
                        "inputs": [x["name"] for x in info.inputs], "output": "logits",
                        "temperature": temp, "weight": weight, "graphs": {"fp32": _graph_entry(info, rel)}})
    return heads, members, files


def make_manifest(encoders: dict, members: list) -> dict:
    """A manifest following docs/bundle.md (fp32 only)."""
    return {
        "format": BUNDLE_FORMAT, "name": "runtime-test", "task": "classification", "labels": LABELS,
        "modalities": ["image", "text", "audio"], "optional_modalities": ["audio"],
        "inputs": {"image": spec_to_dict(IMAGE_SPEC), "text": spec_to_dict(TEXT_SPEC), "audio": spec_to_dict(AUDIO_SPEC)},
        "encoders": encoders, "members": members,
        "ensemble": {"method": "weighted_mean"},  # each member holds its weight and temperature
        "precisions": {"fp32": "ok", "int8": "failed: not built for this test bundle"},
        # Validation accuracy per member, as export records it from training (fixture values:
        # the heads are untrained); the bench picks the member it compares from these.
        "metrics": {"validation": {"split": "val", "samples": 10, "members": {"concat": 0.5, "cross_attention": 0.7}}},
        "versions": {"mmedge": __version__},
    }


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The bundle folder plus the torch modules it was exported from."""
    from mmedge.encoders.text import MiniLMEncoder
    from mmedge.export.bundle_writer import write_bundle

    tmp = tmp_path_factory.mktemp("export")
    tokenizer_file = MiniLMEncoder.tokenizer_file()
    tokenizer = TextTokenizer(tokenizer_file, TEXT_SPEC)
    encoders, enc_entries, files, feats = _build_encoders(tmp, tokenizer)
    heads, members, head_files = _build_heads(tmp, feats)
    files.update(head_files)
    files["tokenizer.json"] = tokenizer_file
    manifest = make_manifest(enc_entries, members)
    path = write_bundle(tmp_path_factory.mktemp("bundles") / "bundle", manifest, files)
    return types.SimpleNamespace(path=path, encoders=encoders, heads=heads, manifest=manifest, files=files,
                                 tokenizer=tokenizer, members=MEMBERS, image_spec=IMAGE_SPEC, audio_spec=AUDIO_SPEC,
                                 text_spec=TEXT_SPEC, labels=LABELS)


@pytest.fixture(scope="session")
def torch_ensemble(built):
    """``make(members=None)``: the PyTorch ``MultimodalEnsemble`` the fixture bundle was exported
    from (its real encoders and heads, temperatures and weights), optionally with some members only."""
    from mmedge.config import MemberConfig, Recipe
    from mmedge.model import MultimodalEnsemble

    names = {"image": "efficientnet_lite0", "text": "minilm_l6", "audio": "audio_cnn"}

    def make(members=None):
        chosen = [m for m in built.members if members is None or m[0] in members]
        modalities = tuple(m for m in names if any(m in mods for _, _, mods, _, _ in chosen))
        recipe = Recipe(name="runtime-test", dataset="test.jsonl", task="classification", modalities=modalities,
                        members=tuple(MemberConfig(n, head, tuple(mods), hidden=64) for n, head, mods, _, _ in chosen),
                        encoders={m: names[m] for m in modalities},
                        specs={m: s for m, s in (("image", IMAGE_SPEC), ("text", TEXT_SPEC), ("audio", AUDIO_SPEC))
                               if m in modalities})
        return MultimodalEnsemble(recipe, {m: built.encoders[m] for m in modalities},
                                  {n: built.heads[n] for n, *_ in chosen}, [t for *_, t in chosen],
                                  [w for *_, w, _ in chosen]).eval()

    return make


def clone(src: Path, dst: Path, *, copy: tuple[str, ...] = ()) -> Path:
    """A cheap bundle copy: hard links to every file but manifest.json and those in ``copy`` (the
    runtime refuses symlinks that leave a bundle). Edit only the copied files: writing to a linked
    one would change the source bundle too."""
    for path in src.rglob("*"):
        if path.is_file():
            rel = path.relative_to(src).as_posix()
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            if rel == "manifest.json" or rel in copy:
                shutil.copyfile(path, dst / rel)
            else:
                try:
                    os.link(path, dst / rel)
                except OSError:  # another file system
                    shutil.copyfile(path, dst / rel)
    return dst


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Verified-bundle stamps (``mmedge.runtime.integrity``) go to a temporary folder, not ~/.cache."""
    old = os.environ.get("MMEDGE_CACHE_DIR")
    os.environ["MMEDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("mmedge-cache"))
    yield
    if old is None:
        os.environ.pop("MMEDGE_CACHE_DIR", None)
    else:
        os.environ["MMEDGE_CACHE_DIR"] = old


def edit_manifest(folder: Path, edit) -> None:
    """Applies ``edit(manifest_dict)`` to ``folder/manifest.json``."""
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="session")
def tools():
    """Helpers to derive bundles from the fixture bundle: ``clone`` and ``edit_manifest``."""
    return types.SimpleNamespace(clone=clone, edit_manifest=edit_manifest)


@pytest.fixture(scope="session")
def bundle_path(built) -> Path:
    return built.path


@pytest.fixture(scope="session")
def session(bundle_path):
    from mmedge.runtime import Session

    with Session(bundle_path, threads=2) as s:
        yield s


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def bundle_zip(bundle_path, tmp_path_factory) -> Path:
    """The fixture bundle as a single ``.mmedge`` file."""
    from mmedge.export.bundle_writer import zip_bundle

    return zip_bundle(bundle_path, tmp_path_factory.mktemp("zip") / "bundle.mmedge")
