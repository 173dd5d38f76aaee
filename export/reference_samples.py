"""Real inputs for parity checks and calibration: preprocessed encoder inputs plus the
PyTorch encoders' features (what the heads take), as ``dict[input_name, ndarray]``."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mmedge.config import Recipe
from mmedge.runtime.audio import preprocess_audio
from mmedge.features import tokenizer
from mmedge.runtime.preprocess import preprocess_images
from mmedge.runtime.waveform import audio_input_name

Arrays = dict[str, np.ndarray]


def encoder_inputs(items: dict[str, list], recipe: Recipe, tokenizer_file: Path | None, *,
                   text_length: int | None = None) -> Arrays:
    """Preprocesses raw items (aligned lists per modality) exactly as the runtime does."""
    out: Arrays = {}
    if "image" in items:
        out["pixel_values"] = preprocess_images(items["image"], recipe.image)
    if "text" in items:
        spec = dataclasses.replace(recipe.text, max_length=text_length or recipe.text.max_length)
        out.update(tokenizer(tokenizer_file, spec)(items["text"]))
    if "audio" in items:
        out[audio_input_name(recipe.audio)] = preprocess_audio(items["audio"], recipe.audio)
    return out


@torch.no_grad()
def with_features(model, inputs: Arrays) -> Arrays:
    """``inputs`` plus every encoder output of the PyTorch model on them."""
    feats = model.features({k: torch.from_numpy(v) for k, v in inputs.items()})
    return {**inputs, **{k: v.numpy() for k, v in feats.items()}}


def parity_cases(model, recipe: Recipe, items: dict[str, list], tokenizer_file: Path | None) -> list[Arrays]:
    """Cases at batch 1, 2 and 7, and for text at the full and at half the token length."""
    lengths = [None] + ([max(4, recipe.text.max_length // 2)] if "text" in items else [])
    cases = []
    for length in lengths:
        for batch in (1, 2, 7):
            chunk = {m: v[:batch] for m, v in items.items()}
            cases.append(with_features(model, encoder_inputs(chunk, recipe, tokenizer_file, text_length=length)))
    return cases


def calibration_set(model, recipe: Recipe, items: dict[str, list], tokenizer_file: Path | None,
                    *, batch: int = 1) -> list[Arrays]:
    """Calibration batches for every component: row i of each modality forms one sample."""
    n = min(len(v) for v in items.values())
    out = []
    for start in range(0, n, batch):
        chunk = {m: v[start:start + batch] for m, v in items.items()}
        out.append(with_features(model, encoder_inputs(chunk, recipe, tokenizer_file)))
    return out


def rows_items(data, rows: Sequence[int], modalities: Sequence[str]) -> dict[str, list]:
    """Raw items of dataset rows for the given modalities."""
    from mmedge.evaluation import raw_inputs

    raw = raw_inputs(data, rows, modalities)
    if "audio" in raw:  # (wave, rate): preprocessing resamples to the spec's rate as training did
        rate = raw.pop("audio_rate")
        raw["audio"] = [(w, rate) for w in raw["audio"]]
    return raw
