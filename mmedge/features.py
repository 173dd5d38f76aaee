"""Encoder inputs and cached encoder features for a dataset.

Preprocessing is the runtime's numpy code, reached through each modality's record
(``mmedge.runtime.modalities``): the dataset's rows are read as ``Session.predict`` reads a
user's arguments, so training sees exactly what the device will compute.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mmedge.config import Recipe
from mmedge.datasets.base import row_groups
from mmedge.encoders import Encoder
from mmedge.errors import DataError
from mmedge.progress import track
from mmedge.runtime.limits import Limits
from mmedge.runtime.modalities import InputOptions, Preprocess, PreprocessContext, get_modality, modality_names

BATCH = 64
# A dataset is the user's own, already in memory: only what preprocessing itself refuses is refused.
_DATASET_LIMITS = Limits(max_text_chars=2**40, max_batch=2**40, max_audio_seconds=1e9, min_audio_rate=1,
                         max_audio_rate=2**40, max_image_pixels=2**60)


@dataclass
class FeatureSet:
    """Encoder outputs for N samples (``{modality}_{pooled,seq,mask}`` -> (N, ...)), labels, and each
    row's groups ((N, G): ``mmedge.datasets.base.row_groups``; None when the dataset has none)."""

    feats: dict[str, torch.Tensor]
    y: torch.Tensor
    groups: np.ndarray | None = None

    def take(self, idx: Any) -> "FeatureSet":
        """Rows ``idx`` (indices or a mask)."""
        rows = np.asarray(idx)
        idx = torch.as_tensor(rows)
        groups = self.groups[rows] if self.groups is not None else None
        return FeatureSet({k: v[idx] for k, v in self.feats.items()}, self.y[idx], groups)

    def __len__(self) -> int:
        return len(self.y)


@functools.lru_cache(maxsize=16)
def preprocessor(modality: str, spec: Any, tokenizer_file: Path | None = None, length_bucket: int = 0) -> Preprocess:
    """The runtime's preprocessing of ``modality`` for ``spec``, built once; the file a spec names (the
    tokenizer) is read from ``tokenizer_file``; ``length_bucket`` pads variable-length inputs as a
    ``Session`` does (``Session.length_buckets``; 0: to the spec's full length, as training does)."""
    folder = Path(tokenizer_file).parent if tokenizer_file is not None else None
    read = (lambda rel: Path(tokenizer_file).read_bytes()) if tokenizer_file is not None else None
    context = PreprocessContext(read_file=read, folder=folder, length_bucket=length_bucket)
    return get_modality(modality).preprocessor(spec, context)


def dataset_samples(data, modality: str, rows: Sequence[int]) -> list:
    """The samples of ``modality`` in dataset ``rows``, read as ``Session.predict`` reads the same arguments."""
    from mmedge.evaluation import raw_inputs

    raw = raw_inputs(data, rows, [modality])
    if modality not in raw:
        raise DataError(f"dataset {data.name!r} has no {modality} (it has {list(data.modalities)})")
    options = InputOptions(**{k: v for k, v in raw.items() if k not in modality_names()})  # audio_rate...
    return get_modality(modality).prepare(raw[modality], options, _DATASET_LIMITS)


def modality_inputs(
    data, modality: str, rows: Sequence[int], recipe: Recipe, tokenizer_file: Path | None, *, length_bucket: int = 0
) -> dict[str, np.ndarray]:
    """Preprocessed encoder inputs of ``modality`` for dataset rows ``rows`` (``length_bucket``: see ``preprocessor``)."""
    if modality not in recipe.specs:
        raise DataError(f"recipe {recipe.name!r} has no {modality} (it has {list(recipe.modalities)})")
    samples = dataset_samples(data, modality, list(rows))
    return preprocessor(modality, recipe.specs[modality], tokenizer_file, length_bucket)(samples)


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
    return FeatureSet({k: torch.cat(v) for k, v in feats.items()}, torch.as_tensor(np.asarray(data.y), dtype=torch.long),
                      row_groups(data.meta))
