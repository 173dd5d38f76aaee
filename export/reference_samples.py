"""Real inputs for parity checks and calibration: preprocessed encoder inputs plus the
PyTorch encoders' features (what the heads take), as ``dict[input_name, ndarray]``."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mmedge.config import Recipe
from mmedge.features import dataset_samples, preprocessor

Arrays = dict[str, np.ndarray]


def _at_length(spec, length: int | None):
    """``spec`` with a shorter ``max_length`` (a sequence modality: text), for parity at another length."""
    return dataclasses.replace(spec, max_length=length) if length and hasattr(spec, "max_length") else spec


def encoder_inputs(items: dict[str, list], recipe: Recipe, tokenizer_file: Path | None, *,
                   text_length: int | None = None) -> Arrays:
    """Preprocesses samples (aligned lists per modality) exactly as the runtime does; ``text_length``
    shortens the sequence modalities' ``max_length``."""
    out: Arrays = {}
    for m, samples in items.items():
        out.update(preprocessor(m, _at_length(recipe.specs[m], text_length), tokenizer_file)(samples))
    return out


@torch.no_grad()
def with_features(model, inputs: Arrays) -> Arrays:
    """``inputs`` plus every encoder output of the PyTorch model on them."""
    feats = model.features({k: torch.from_numpy(v) for k, v in inputs.items()})
    return {**inputs, **{k: v.numpy() for k, v in feats.items()}}


def parity_cases(model, recipe: Recipe, items: dict[str, list], tokenizer_file: Path | None) -> list[Arrays]:
    """Cases at batch 1, 2 and 7, and for text at the full and at half the token length."""
    lengths = [None] + sorted({max(4, s.max_length // 2) for m, s in recipe.specs.items()
                               if m in items and hasattr(s, "max_length")})
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
    """Samples of dataset rows for the given modalities (audio as ``(wave, rate)``: preprocessing
    resamples to the spec's rate as training did)."""
    return {m: dataset_samples(data, m, list(rows)) for m in modalities if m in data.modalities}
