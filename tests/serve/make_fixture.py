"""Writes the serve tests' fixture in the MAIN environment (torch, export): ``OUT/bundle``, ``OUT/samples.npz`` and
``OUT/waveform-bundle`` (image + raw-waveform Hugging Face audio encoders) and ``OUT/clip-bundle`` (a tiny CLIP
exported as itself: similarity against free texts, and a zero-shot member).

The serve tests run in a virtual environment of their own (PyTriton pins numpy<2) that has
no torch, so ``.ci/serve_tests.sh`` builds the shared fixture bundle of ``tests/conftest.py``
here and points ``MMEDGE_SERVE_FIXTURE`` at it. The samples are rows of the reference
``digits-av`` test split (real images, captions and spoken digits).

    python tests/serve/make_fixture.py OUT [--samples 12]
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
from pathlib import Path

import numpy as np

SAMPLES_FILE = "samples.npz"
WAVEFORM_BUNDLE = "waveform-bundle"
WAVEFORM_LABELS = ["zero", "one", "two"]
CLIP_BUNDLE = "clip-bundle"
CLIP_LABELS = ["cat", "dog", "car"]


def _tests_module(filename: str):
    """A module of ``tests/`` by file name (``tests`` is not a package)."""
    path = Path(__file__).resolve().parents[1] / filename
    spec = importlib.util.spec_from_file_location(f"mmedge_tests_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_bundle(out: Path) -> Path:
    """Exports the fixture bundle of ``tests/conftest.py`` to ``out`` (a folder that must not exist), with its merged
    heads graph as export writes bundles."""
    from mmedge.encoders.text import MiniLMEncoder
    from mmedge.export.bundle_writer import write_bundle
    from mmedge.runtime.preprocess import TextTokenizer

    conf = _tests_module("conftest.py")
    with tempfile.TemporaryDirectory(prefix="mmedge-serve-fixture-") as tmp:
        tokenizer_file = MiniLMEncoder.tokenizer_file()
        _, entries, files, feats = conf._build_encoders(Path(tmp), TextTokenizer(tokenizer_file, conf.TEXT_SPEC))
        _, members, head_files = conf._build_heads(Path(tmp), feats)
        files.update(head_files)
        files["tokenizer.json"] = tokenizer_file
        plain = write_bundle(Path(tmp) / "plain", conf.make_manifest(entries, members), files)
        return _with_merged_heads(plain, out, feats)


def _with_merged_heads(plain: Path, out: Path, feats: dict) -> Path:
    """``plain`` rewritten to ``out`` with its merged heads graph (every head and the rule as one graph), as
    export writes bundles."""
    import json

    from mmedge.export.bundle_writer import write_bundle
    from mmedge.export.heads_graph import with_heads_graphs
    from mmedge.runtime.manifest import Manifest

    data = json.loads((plain / "manifest.json").read_text())
    typed = Manifest.from_json(data)
    names = {n for m in typed.members for n in m.inputs}
    merged = with_heads_graphs(typed, plain, [{n: feats[n][:2] for n in names}, {n: feats[n][:1] for n in names}])
    files = {rel: plain / rel for rel in data["files"]}
    files.update({g.file: plain / g.file for g in merged.ensemble.graphs.values()})
    return write_bundle(out, merged, files)


def build_waveform_bundle(out: Path) -> Path:
    """A bundle whose audio encoder is a tiny Hugging Face wav2vec2 (raw-waveform front end: its graph input is
    ``waveform``, not ``mel``) beside a tiny ViT, fp32, with one fusion head: what ``mmedge serve`` must serve too."""
    import torch

    from mmedge.export.exporter import ExportConfig
    from mmedge.export.user_model import Member, export_model
    from mmedge.runtime.specs import AudioSpec

    tiny = _tests_module("tiny_hf.py")
    with tempfile.TemporaryDirectory(prefix="mmedge-serve-hf-") as tmp:
        folders = {m: build(Path(tmp) / m) for m, build in (("image", tiny.build_vit), ("audio", tiny.build_wav2vec2))}
        torch.manual_seed(0)
        mlp = torch.nn.Sequential(torch.nn.LayerNorm(64), torch.nn.Linear(64, len(WAVEFORM_LABELS)))

        class Head(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.mlp = mlp

            def forward(self, feats):
                return self.mlp(torch.cat([feats["image_pooled"], feats["audio_pooled"]], dim=-1)) * 20.0

        rng = np.random.default_rng(0)
        calib = [{"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "label": WAVEFORM_LABELS[i % 3],
                  "audio": (rng.standard_normal(12000).astype(np.float32) * 0.2, 16000)} for i in range(6)]
        export_model(encoders={m: f"hf:{f}" for m, f in folders.items()},
                     heads={"fuse": Member(Head(), inputs=("image_pooled", "audio_pooled"))}, labels=WAVEFORM_LABELS,
                     specs={"audio": AudioSpec(sample_rate=16000, clip_seconds=1.0)}, calib=calib, out=out,
                     config=ExportConfig(precisions=("fp32",), calib_samples=6))
    return out


def build_clip_bundle(out: Path) -> Path:
    """A tiny CLIP folder (``tests/tiny_pretrained.py``) exported as itself, fp32: the image tower scored against
    free texts (``similarity`` in its manifest) and the zero-shot member over ``CLIP_LABELS``."""
    from mmedge.export.exporter import ExportConfig
    from mmedge.export.pretrained import export_pretrained

    tiny = _tests_module("tiny_pretrained.py")
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="mmedge-serve-clip-") as tmp:
        folder = tiny.clip_folder(Path(tmp) / "clip")
        calib = [{"image": rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)} for _ in range(4)]
        export_pretrained(folder, labels=CLIP_LABELS, calib=calib, out=out,
                          config=ExportConfig(precisions=("fp32",), calib_samples=4))
    return out


def write_samples(out: Path, count: int = 12, seed: int = 0) -> Path:
    """Writes ``count`` rows of the ``digits-av`` test split (images, texts, waves, labels) to ``out``."""
    from mmedge.datasets import build_dataset

    ds = build_dataset("digits-av", seed=seed)
    rows = ds.split("test")
    idx = np.arange(min(count, len(rows)))
    np.savez(out, images=np.stack([np.asarray(rows.images[i]) for i in idx]),
             texts=np.array([rows.texts[i] for i in idx]),
             audio=np.stack([np.asarray(rows.audio[i], dtype=np.float32) for i in idx]),
             audio_rate=np.int64(rows.audio_rate), labels=np.asarray(rows.y)[idx])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--samples", type=int, default=12)
    args = parser.parse_args()
    if (args.out / "bundle").exists():
        shutil.rmtree(args.out / "bundle")
    args.out.mkdir(parents=True, exist_ok=True)
    build_bundle(args.out / "bundle")
    write_samples(args.out / SAMPLES_FILE, args.samples)
    if (args.out / WAVEFORM_BUNDLE).exists():
        shutil.rmtree(args.out / WAVEFORM_BUNDLE)
    build_waveform_bundle(args.out / WAVEFORM_BUNDLE)
    if (args.out / CLIP_BUNDLE).exists():
        shutil.rmtree(args.out / CLIP_BUNDLE)
    build_clip_bundle(args.out / CLIP_BUNDLE)
    print(f"serve fixture written to {args.out}")


if __name__ == "__main__":
    main()
