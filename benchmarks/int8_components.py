"""Latency and fidelity of fp32 / fp16 / int8 encoder graphs in ONNX Runtime (CPU).

Exports EfficientNet-Lite0 (128x128) and all-MiniLM-L6-v2 (32 tokens), converts them to
fp16 and quantizes them with NNCF (the ``int8`` and ``int8-trt`` policies), then measures
median batch-1 latency over interleaved runs (2 ORT threads) and the int8 feature cosine
against fp32 on real inputs: scikit-image sample photos, scikit-learn digits rendered at
128x128, and English sentences. Nothing is downloaded.

    python benchmarks/int8_components.py [--runs 100] [--out /tmp/int8_components]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

SENTENCES = [
    "A cat is sleeping on the warm windowsill.", "The rocket lifted off at dawn from the launch pad.",
    "She poured a cup of coffee and opened the newspaper.", "Handwritten digits are scanned at low resolution.",
    "The astronaut floated outside the space station.", "Coins of different sizes lay scattered on the table.",
    "The moon was bright enough to read by.", "He photographed the old camera in the museum.",
    "Please say the number seven clearly.", "The quick brown fox jumps over the lazy dog.",
    "Rain is expected tomorrow afternoon in the north.", "The robot picked up the red block and placed it in the box.",
    "Our train was delayed by twenty minutes.", "This image shows the digit three written in thick strokes.",
    "A child counted from one to ten out loud.", "The museum opens at nine on weekdays.",
    "Fresh bread smells wonderful in the morning.", "The microscope revealed cells stained in brown and blue.",
    "Traffic lights turned green and the cars moved on.", "Two dogs chased a ball across the park.",
    "The printer ran out of paper again.", "Heavy snow closed the mountain pass overnight.",
    "The chef sliced tomatoes for the salad.", "A small boat drifted slowly down the river.",
    "Students listened carefully to the lecture on physics.", "The camera on the robot detects obstacles.",
    "Is this the number eight or the number zero?", "She wrote the digit five on the whiteboard.",
    "Wind turbines spun steadily on the hill.", "The audio clip contains a spoken word.",
    "He forgot his umbrella at the station.", "Bright stars filled the night sky above the desert.",
    "The nurse checked the patient's temperature.", "Autumn leaves covered the garden path.",
    "The orchestra tuned their instruments before the concert.", "A spider spun its web between two branches.",
    "The package will arrive on Thursday.", "Please turn off the lights when you leave.",
    "The engineer measured the latency of the model.", "Seagulls circled above the fishing harbour.",
    "My grandmother grows roses and lavender.", "The football match ended in a draw.",
    "A motorcycle was parked beside the wall.", "The library is quiet in the early afternoon.",
    "The kettle whistled as the water boiled.", "He typed the number four into the keypad.",
    "A bee landed on the yellow flower.", "The satellite sent back pictures of distant galaxies.",
]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "hubble_deep_field",
          "immunohistochemistry", "retina", "colorwheel", "logo", "brick", "grass", "gravel", "cell", "clock", "text")


def real_images(n_digits: int, seed: int) -> list[np.ndarray]:
    """Sample photos (plus flipped crops) and load_digits digits as uint8 RGB arrays."""
    import skimage.data
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    images = []
    for name in PHOTOS:
        im = getattr(skimage.data, name)()
        im = np.repeat(im[:, :, None], 3, 2) if im.ndim == 2 else im[:, :, :3]
        im = im.astype(np.uint8) if im.dtype == np.uint8 else (255 * (im > 0)).astype(np.uint8)
        h, w = im.shape[:2]
        top, left = rng.integers(0, h // 4 + 1), rng.integers(0, w // 4 + 1)
        images += [im, np.ascontiguousarray(im[top:top + 3 * h // 4, left:left + 3 * w // 4, ::-1])]
    digits = load_digits().images[rng.permutation(1797)[:n_digits]]  # (n, 8, 8) in 0..16
    images += [np.repeat((255 - d * 255 / 16).astype(np.uint8)[:, :, None], 3, 2) for d in digits]
    return images


def image_inputs(images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    from mmedge.runtime.preprocess import preprocess_images
    from mmedge.runtime.specs import ImageSpec

    return [{"pixel_values": preprocess_images([im], ImageSpec(size=128, mean=(0.498,) * 3, std=(0.502,) * 3))} for im in images]


def text_inputs(sentences: list[str]) -> list[dict[str, np.ndarray]]:
    from mmedge.encoders.text import MiniLMEncoder
    from mmedge.runtime.preprocess import TextTokenizer
    from mmedge.runtime.specs import TextSpec

    tok = TextTokenizer(MiniLMEncoder.tokenizer_file(), TextSpec(max_length=32, lowercase=True))
    return [tok([s]) for s in sentences]


def build(name: str, enc, calib, evals, out: Path, model_type: str) -> dict[str, Path]:
    from mmedge.export.onnx_export import export_encoder
    from mmedge.export.quantization import POLICIES

    example = {k: np.concatenate([evals[0][k], evals[1][k]]) for k in evals[0]}
    paths = {p: out / f"{name}.{p}.onnx" for p in ("fp32", "fp16", "int8", "int8-trt")}
    export_encoder(enc, paths["fp32"], example_inputs=example)
    for p in ("fp16", "int8", "int8-trt"):
        POLICIES[p].build(paths["fp32"], paths[p], calib=calib, model_type=model_type)
    return paths


def latency(paths: dict[str, Path], feed: dict[str, np.ndarray], runs: int) -> dict[str, float]:
    """Median ms per precision, runs interleaved so drift hits every variant alike."""
    from mmedge.runtime.backends.ort import create_session

    sessions = {p: create_session(path, threads=2) for p, path in paths.items() if p != "int8-trt"}
    times: dict[str, list[float]] = {p: [] for p in sessions}
    for _ in range(10):
        for s in sessions.values():
            s.run(None, feed)
    for _ in range(runs):
        for p, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feed)
            times[p].append(1000 * (time.perf_counter() - t))
    return {p: round(float(np.median(v)), 3) for p, v in times.items()}


def fidelity(paths: dict[str, Path], evals: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    from mmedge.export.parity import check_reduced_precision

    out = {}
    for p in ("fp16", "int8", "int8-trt"):
        rep = check_reduced_precision(paths["fp32"], paths[p], evals, precision=p)
        out[p] = {r["output"]: round(min(x["min_cosine"] for x in rep["cases"] if x["output"] == r["output"]), 5)
                  for r in rep["cases"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="int8_components_"))
    out.mkdir(parents=True, exist_ok=True)
    from mmedge.encoders import create_encoder, freeze

    images = image_inputs(real_images(120, seed=0))  # 36 photos/crops + 120 digits
    rng = np.random.default_rng(1)
    order = rng.permutation(len(images))
    img_cal, img_eval = [images[i] for i in order[:96]], [images[i] for i in order[96:]]
    texts = text_inputs(SENTENCES)
    txt_cal, txt_eval = texts[:32], texts[32:]
    report = {}
    for name, enc_name, cal, ev, mt in (("image", "efficientnet_lite0", img_cal, img_eval, "cnn"),
                                        ("text", "minilm_l6", txt_cal, txt_eval, "transformer")):
        paths = build(name, freeze(create_encoder(enc_name)), cal, ev, out, mt)
        report[name] = {"latency_ms": latency(paths, ev[0], args.runs), "min_cosine_vs_fp32": fidelity(paths, ev),
                        "calibration_samples": len(cal), "eval_samples": len(ev)}
        print(name, json.dumps(report[name], indent=1), flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"graphs and report.json in {out}")


if __name__ == "__main__":
    main()
