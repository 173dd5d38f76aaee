"""Writes the default calibration sets from the reference datasets' TRAINING splits.

    python calibration_data/make_default.py

Each set is a JSONL file (docs/data_format.md) with PNG images and 16-bit WAV clips next to
it: real samples, stratified over the labels, never from the held-out test split.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
PER_CLASS = {"digits-av": 16, "digits-match": 75}


def stratified_rows(y: np.ndarray, rows: np.ndarray, per_class: int, seed: int = 0) -> list[int]:
    """``per_class`` training rows of every label, deterministic."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y[rows]):
        cls = rows[y[rows] == c]
        out += sorted(rng.choice(cls, size=min(per_class, len(cls)), replace=False).tolist())
    return sorted(out)


def write_set(name: str) -> Path:
    """Writes ``calibration_data/<name>/calib.jsonl`` and its files."""
    from mmedge.datasets import build_dataset

    data = build_dataset(name, seed=0)
    folder = HERE / name
    folder.mkdir(exist_ok=True)
    for stale in [*folder.glob("*.png"), *folder.glob("*.wav")]:  # samples of an earlier dataset version
        stale.unlink()
    lines = []
    for i in stratified_rows(np.asarray(data.y), np.asarray(data.splits["train"]), PER_CLASS[name]):
        row = {"label": data.labels[int(data.y[i])]}
        if data.images is not None:
            cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(np.asarray(data.images[i]), cv2.COLOR_RGB2BGR))
            row["image"] = f"{i:05d}.png"
        if data.texts is not None:
            row["text"] = data.texts[i]
        if data.audio is not None:
            sf.write(str(folder / f"{i:05d}.wav"), np.asarray(data.audio[i]), data.audio_rate, subtype="PCM_16")
            row["audio"] = f"{i:05d}.wav"
        lines.append(json.dumps(row))
    (folder / "calib.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "calib.jsonl"


if __name__ == "__main__":
    for dataset in sys.argv[1:] or list(PER_CLASS):
        print(write_set(dataset))
