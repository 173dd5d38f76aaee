"""Turns what a user passes to ``Session.predict`` into per-modality batches.

A modality's argument is a single item or a list of items (a batch). These helpers only
split and check; the preprocessing itself is ``mmedge.runtime.preprocess``.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from mmedge.errors import InputError

__all__ = ["image_items", "text_items", "audio_items", "check_batch_sizes"]

_PATHS = (str, os.PathLike)
_BYTES = (bytes, bytearray, memoryview)


def _as_list(value: Any, *, modality: str, is_single: bool) -> list:
    items = [value] if is_single else value
    if not isinstance(items, (list, tuple)):
        raise InputError(f"{modality}= must be one item or a list of items, got {type(value).__name__}")
    if len(items) == 0:
        raise InputError(f"{modality}= is an empty list; pass at least one item or leave it out")
    return list(items)


def image_items(image: Any) -> list:
    """Splits ``image=`` into a list of items for ``load_image``.

    A single item is an ndarray (H, W[, C]), a path or encoded bytes; an ndarray
    (N, H, W, C) or a list/tuple is a batch.
    """
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return list(image)
    single = isinstance(image, (np.ndarray, *_PATHS, *_BYTES))
    return _as_list(image, modality="image", is_single=single)


def text_items(text: Any) -> list[str]:
    """Splits ``text=`` (a str or a list of str) into a list of non-empty strings."""
    items = _as_list(text, modality="text", is_single=isinstance(text, str))
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InputError(f"text[{i}] is a {type(item).__name__}, not a str; pass strings")
        if not item.strip():
            raise InputError(f"text[{i}] is empty or whitespace only; pass some text")
    return items


def audio_items(audio: Any, audio_rate: int | None) -> list[tuple[Any, int | None]]:
    """Splits ``audio=`` into ``(array_or_path, rate)`` items.

    Arrays need ``audio_rate`` (Hz); files carry their own rate (``audio_rate`` then must
    match it, or be None).
    """
    items = _as_list(audio, modality="audio", is_single=isinstance(audio, (np.ndarray, *_PATHS)))
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray) and audio_rate is None:
            raise InputError(f"audio[{i}] is an array with no sample rate; pass audio_rate= (Hz), "
                             "e.g. audio_rate=16000")
        if not isinstance(item, (np.ndarray, *_PATHS)):
            raise InputError(f"audio[{i}] is a {type(item).__name__}; pass a numpy array or a wav/flac path")
    return [(item, audio_rate) for item in items]


def check_batch_sizes(sizes: dict[str, int]) -> int:
    """The common batch size of the given modalities; differing sizes are an error."""
    if len(set(sizes.values())) > 1:
        raise InputError(f"batch sizes differ between modalities: {sizes}; pass the same number of items "
                         "for each modality")
    return next(iter(sizes.values()))


def load_waves(items: Sequence[tuple[Any, int | None]]) -> list[tuple[np.ndarray, int]]:
    """Loads each ``(array_or_path, rate)`` item as a mono float32 ``(wave, rate)``."""
    from mmedge.runtime.audio import load_audio

    return [load_audio(source, sample_rate=rate) for source, rate in items]
