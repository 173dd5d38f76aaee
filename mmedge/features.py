"""Encoder inputs and cached encoder features for a dataset.

Preprocessing is the runtime's numpy code (``mmedge.runtime.preprocess``), so training
sees exactly what the device will compute.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mmedge.config import Recipe
from mmedge.encoders import Encoder
from mmedge.errors import DataError
from mmedge.progress import track
from mmedge.runtime.preprocess import TextTokenizer, preprocess_audio, preprocess_images
from mmedge.runtime.specs import TextSpec
from mmedge.runtime.waveform import audio_input_name

BATCH = 64


@dataclass
class FeatureSet:
    """Encoder outputs for N samples (``{modality}_{pooled,seq,mask}`` -> (N, ...)) and labels."""

    feats: dict[str, torch.Tensor]
    y: torch.Tensor

    def take(self, idx: Any) -> "FeatureSet":
        """Rows ``idx`` (indices or a mask)."""
        idx = torch.as_tensor(np.asarray(idx))
        return FeatureSet({k: v[idx] for k, v in self.feats.items()}, self.y[idx])

    def __len__(self) -> int:
        return len(self.y)


@functools.lru_cache(maxsize=8)
def tokenizer(tokenizer_file: Path | None, spec: TextSpec) -> TextTokenizer:
    """The runtime's tokenizer for ``tokenizer_file`` and ``spec``, loaded once."""
    return TextTokenizer(tokenizer_file, spec)


def modality_inputs(
    data, modality: str, rows: Sequence[int], recipe: Recipe, tokenizer_file: Path | None
) -> dict[str, np.ndarray]:
    """Preprocessed encoder inputs of ``modality`` for dataset rows ``rows``."""
    if modality == "image":
        return {"pixel_values": preprocess_images([data.images[i] for i in rows], recipe.image)}
    if modality == "text":
        return tokenizer(tokenizer_file, recipe.text)([data.texts[i] for i in rows])
    if modality == "audio":
        waves = [(data.audio[i], data.audio_rate) for i in rows]
        return {audio_input_name(recipe.audio): preprocess_audio(waves, recipe.audio)}
    raise DataError(f"unknown modality {modality!r}")


def batched_inputs(data, modality: str, recipe: Recipe, tokenizer_file: Path | None, batch: int = BATCH):
    """Yields preprocessed input batches of ``modality`` over the whole dataset."""
    if modality not in data.modalities:
        raise DataError(f"dataset {data.name!r} has no {modality} (it has {list(data.modalities)})")
    n = len(data)
    for start in range(0, n, batch):
        yield modality_inputs(data, modality, range(start, min(n, start + batch)), recipe, tokenizer_file)


@torch.no_grad()
def encode(
    encoders: Mapping[str, Encoder], data, recipe: Recipe, tokenizer_file: Path | None
) -> FeatureSet:
    """Runs every (frozen) encoder over the dataset once and caches its outputs."""
    feats: dict[str, list[torch.Tensor]] = {}
    for modality, enc in encoders.items():
        enc.eval()
        total = -(-len(data) // BATCH)
        for inputs in track(batched_inputs(data, modality, recipe, tokenizer_file), f"encoding {modality}", total):
            outs = enc(*[torch.from_numpy(inputs[n]) for n in enc.input_names])
            for name, t in zip(enc.output_names(), outs):
                feats.setdefault(name, []).append(t)
    return FeatureSet({k: torch.cat(v) for k, v in feats.items()}, torch.as_tensor(np.asarray(data.y), dtype=torch.long))
