"""The serving wire encoding of the built-in modalities: request tensors <-> preprocessing samples.

numpy only. Each modality record (``mmedge.runtime.modalities``) names its wire tensors and uses
one decoder and one encoder from here; ``mmedge.serve.protocol`` assembles the contract from the
records. ``limits`` is the serving layer's per-row ``mmedge.serve.protocol.WireLimits`` (``max_image_side``,
``max_text_bytes``, ``max_audio_seconds``, ``audio_rates``). Rows come batched (Triton prepends
the batch axis); every error is an ``InputError`` naming the tensor and what is accepted.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.errors import InputError

__all__ = ["batched", "images_from_wire", "images_to_wire", "texts_from_wire", "texts_to_wire", "waves_from_wire",
           "waves_to_wire"]


def batched(data: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Request tensor ``name`` as a batched array (batch axis first)."""
    value = data[name]
    if not isinstance(value, np.ndarray) or value.ndim < 1:
        raise InputError(f"input {name!r} must be a batched array, got {type(value).__name__}")
    return value


def images_from_wire(data: Mapping[str, np.ndarray], limits: Any, name: str = "image") -> list[np.ndarray]:
    """``image`` rows: uint8 (batch, H, W, 3) RGB -> a list of (H, W, 3) arrays."""
    value = batched(data, name)
    side = max(value.shape[1:3]) if value.ndim == 4 else 0
    if value.ndim != 4 or value.shape[3] != 3 or value.dtype != np.uint8 or 0 in value.shape[1:3]:
        raise InputError(f"{name} must be uint8 (batch, H, W, 3) RGB pixels, got {value.dtype} {list(value.shape)}")
    if side > limits.max_image_side:
        raise InputError(f"{name} is {value.shape[2]}x{value.shape[1]} pixels; the server accepts at most "
                         f"{limits.max_image_side} pixels a side: resize it first")
    return list(value)


def images_to_wire(images: Sequence[np.ndarray], name: str = "image") -> dict[str, np.ndarray]:
    """RGB uint8 (H, W, 3) images of one size -> the ``image`` tensor (b, H, W, 3)."""
    return {name: np.stack(images)}


def texts_from_wire(data: Mapping[str, np.ndarray], limits: Any, name: str = "text") -> list[str]:
    """``text`` rows: BYTES (batch, 1) UTF-8 -> strings."""
    value = batched(data, name)
    texts = []
    for i, raw in enumerate(value.reshape(len(value), -1)[:, 0]):
        raw = raw if isinstance(raw, bytes) else str(raw).encode()
        if len(raw) > limits.max_text_bytes:
            raise InputError(f"{name}[{i}] has {len(raw)} bytes; the server accepts at most {limits.max_text_bytes}")
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"{name}[{i}] is not valid UTF-8; send UTF-8 encoded text") from None
    return texts


def texts_to_wire(texts: Sequence[str], name: str = "text") -> dict[str, np.ndarray]:
    """Strings -> the ``text`` tensor, BYTES (b, 1)."""
    return {name: np.array([[t.encode("utf-8")] for t in texts], dtype=object)}


def waves_from_wire(data: Mapping[str, np.ndarray], limits: Any, name: str = "audio", rate_name: str = "audio_rate"
                    ) -> list[tuple[np.ndarray, int]]:
    """``audio`` FP32 (batch, samples) and ``audio_rate`` INT32 (batch, 1) rows -> ``(wave, rate)`` samples."""
    if rate_name not in data:
        raise InputError(f"input {name!r} needs {rate_name!r} (Hz, int32, one per row) as well")
    waves, rates = batched(data, name), batched(data, rate_name).reshape(-1)
    if waves.ndim != 2 or len(rates) != len(waves):
        raise InputError(f"{name} must be (batch, samples) with one {rate_name} per row, got {list(waves.shape)} "
                         f"and {len(rates)} rates")
    lo, hi = limits.audio_rates
    for i, rate in enumerate(rates):
        if not lo <= int(rate) <= hi:
            raise InputError(f"{rate_name}[{i}] is {int(rate)} Hz; send a rate between {lo} and {hi} Hz")
        if waves.shape[1] > limits.max_audio_seconds * int(rate):
            raise InputError(f"{name}[{i}] is {waves.shape[1] / int(rate):.1f} s long; the server accepts at most "
                             f"{limits.max_audio_seconds:g} s: cut it first")
    return [(np.asarray(w, dtype=np.float32), int(r)) for w, r in zip(waves, rates)]


def waves_to_wire(waves: Sequence[tuple[np.ndarray, int]], name: str = "audio", rate_name: str = "audio_rate"
                  ) -> dict[str, np.ndarray]:
    """``(wave, rate)`` samples of one length -> the ``audio`` (b, samples) and ``audio_rate`` (b, 1) tensors."""
    return {name: np.stack([w for w, _ in waves]).astype(np.float32),
            rate_name: np.array([[r] for _, r in waves], dtype=np.int32)}
