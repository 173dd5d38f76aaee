"""Writes the serve tests' fixture in the MAIN environment (torch, export): ``OUT/bundle`` and ``OUT/samples.npz``.

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


def _root_conftest():
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("mmedge_tests_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_bundle(out: Path) -> Path:
    """Exports the fixture bundle of ``tests/conftest.py`` to ``out`` (a folder that must not exist)."""
    from mmedge.encoders.text import MiniLMEncoder
    from mmedge.export.bundle_writer import write_bundle
    from mmedge.runtime.preprocess import TextTokenizer

    conf = _root_conftest()
    with tempfile.TemporaryDirectory(prefix="mmedge-serve-fixture-") as tmp:
        tokenizer_file = MiniLMEncoder.tokenizer_file()
        _, entries, files, feats = conf._build_encoders(Path(tmp), TextTokenizer(tokenizer_file, conf.TEXT_SPEC))
        _, members, head_files = conf._build_heads(Path(tmp), feats)
        files.update(head_files)
        files["tokenizer.json"] = tokenizer_file
        return write_bundle(out, conf.make_manifest(entries, members), files)


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
    print(f"serve fixture written to {args.out}")


if __name__ == "__main__":
    main()
