"""Turns what a user passes to ``Session.predict`` into per-modality batches, within ``Limits``.

A modality's argument is a single item or a list of items (a batch). These helpers split, check
and load; the preprocessing itself is ``mmedge.runtime.preprocess``. Every error is an
``InputError`` that names the argument (``text[1]``, ``audio_rate``...), says what was wrong and
what is accepted.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.limits import DEFAULT_LIMITS, Limits

__all__ = ["image_items", "text_items", "audio_items", "check_batch_sizes", "check_audio_rate", "check_color_order",
           "check_stream_args", "load_images", "load_waves", "AUDIO_LAYOUTS"]

_PATHS = (str, os.PathLike)
_BYTES = (bytes, bytearray, memoryview)
AUDIO_LAYOUTS = (None, "channels_first", "channels_last")
_T = TypeVar("_T")


def _as_list(value: Any, *, modality: str, is_single: bool, limits: Limits) -> list:
    items = [value] if is_single else value
    if not isinstance(items, (list, tuple)):
        raise InputError(f"{modality}= must be one item or a list of items, got {type(value).__name__}")
    if len(items) == 0:
        raise InputError(f"{modality}= is an empty list; pass at least one item or leave it out")
    if len(items) > limits.max_batch:
        raise InputError(f"{modality}= holds {len(items)} items, more than max_batch ({limits.max_batch}); split "
                         f"the batch, or {limits.raise_hint('max_batch')}")
    return list(items)


def _named(argument: str, load: Callable[[], _T]) -> _T:
    """Runs ``load``, prefixing an ``InputError`` with the argument it is about."""
    try:
        return load()
    except InputError as exc:
        raise InputError(f"{argument}: {exc}") from None


def image_items(image: Any, limits: Limits = DEFAULT_LIMITS) -> list:
    """Splits ``image=`` into a list of items for ``load_image``.

    A single item is an ndarray (H, W[, C]), a path or encoded bytes; an ndarray
    (N, H, W, C) or a list/tuple is a batch.
    """
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return _as_list(list(image), modality="image", is_single=False, limits=limits)
    single = isinstance(image, (np.ndarray, *_PATHS, *_BYTES))
    return _as_list(image, modality="image", is_single=single, limits=limits)


def check_color_order(color_order: Any) -> str:
    """``image_color_order=``: ``"RGB"`` or ``"BGR"``."""
    if color_order not in ("RGB", "BGR"):
        raise InputError(f"image_color_order must be 'RGB' or 'BGR' (OpenCV camera frames), got {color_order!r}")
    return color_order


def load_images(items: Sequence[Any], color_order: str, limits: Limits = DEFAULT_LIMITS) -> list[np.ndarray]:
    """Loads every image item as RGB uint8 (H, W, 3), errors named ``image[i]``."""
    from mmedge.runtime.preprocess import load_image

    return [_named(f"image[{i}]", lambda: load_image(item, color_order=color_order, max_pixels=limits.max_image_pixels))
            for i, item in enumerate(items)]


def _check_text(item: Any, index: int, limits: Limits) -> str:
    if not isinstance(item, str):
        raise InputError(f"text[{index}] is a {type(item).__name__}, not a str; pass strings (decode bytes first)")
    if len(item) > limits.max_text_chars:
        raise InputError(f"text[{index}] has {len(item)} characters, more than max_text_chars "
                         f"({limits.max_text_chars}); the encoder reads only the first tokens anyway: cut it, or "
                         f"{limits.raise_hint('max_text_chars')}")
    if not item.strip():
        raise InputError(f"text[{index}] is empty or whitespace only; pass some text")
    try:
        item.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"text[{index}] is not valid Unicode: a lone surrogate {item[exc.start]!r} at position "
                         f"{exc.start} (text decoded with errors='surrogateescape'?); decode the bytes with "
                         "errors='replace' first") from None
    return item


def text_items(text: Any, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Splits ``text=`` (a str or a list of str) into a list of checked, non-empty strings."""
    items = _as_list(text, modality="text", is_single=isinstance(text, str), limits=limits)
    return [_check_text(item, i, limits) for i, item in enumerate(items)]


def check_audio_rate(rate: Any, limits: Limits = DEFAULT_LIMITS, *, name: str = "audio_rate") -> int:
    """An integer sample rate (Hz) within ``limits``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
        raise InputError(f"{name} must be an integer number of Hz (e.g. 16000), got {rate!r}")
    if not limits.min_audio_rate <= rate <= limits.max_audio_rate:
        raise InputError(f"{name}={int(rate)} Hz is outside the accepted range {limits.min_audio_rate}.."
                         f"{limits.max_audio_rate} Hz; resample the audio first, or raise "
                         "limits=Limits(min_audio_rate=..., max_audio_rate=...)")
    return int(rate)


def audio_items(audio: Any, audio_rate: Any, limits: Limits = DEFAULT_LIMITS, layout: Any = None
                ) -> list[tuple[Any, int | None, str | None]]:
    """Splits ``audio=`` into ``(array_or_path, rate, layout)`` items.

    Arrays need ``audio_rate`` (Hz); files carry their own rate (``audio_rate`` then must
    match it, or be None), and so do ``(array, rate)`` pairs in a list (rows of a served
    request). ``layout`` says where the channels of 2-D arrays are.
    """
    if layout not in AUDIO_LAYOUTS:
        raise InputError(f"audio_layout must be None (1-D clips), 'channels_first' (C, N) or 'channels_last' (N, C), "
                         f"got {layout!r}")
    rate = None if audio_rate is None else check_audio_rate(audio_rate, limits)
    items = _as_list(audio, modality="audio", is_single=isinstance(audio, (np.ndarray, *_PATHS)), limits=limits)
    return [_audio_item(item, i, rate, layout, limits) for i, item in enumerate(items)]


def _audio_item(item: Any, index: int, rate: int | None, layout: str | None, limits: Limits
                ) -> tuple[Any, int | None, str | None]:
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray):
        return item[0], check_audio_rate(item[1], limits, name=f"audio[{index}]'s rate"), layout
    if not isinstance(item, (np.ndarray, *_PATHS)):
        raise InputError(f"audio[{index}] is a {type(item).__name__}; pass a numpy array, an (array, rate) pair "
                         "or a wav/flac path")
    if isinstance(item, np.ndarray) and rate is None:
        raise InputError(f"audio[{index}] is an array with no sample rate; pass audio_rate= (Hz), "
                         "e.g. audio_rate=16000")
    return item, rate, layout


def check_batch_sizes(sizes: dict[str, int]) -> int:
    """The common batch size of the given modalities; differing sizes are an error."""
    if len(set(sizes.values())) > 1:
        raise InputError(f"batch sizes differ between modalities: {sizes}; pass the same number of items "
                         "for each modality")
    return next(iter(sizes.values()))


def _check_seconds(samples: int, rate: int, limits: Limits) -> None:
    if samples > limits.max_audio_seconds * rate:
        raise InputError(f"the clip is {samples / rate:.1f} s long, more than max_audio_seconds "
                         f"({limits.max_audio_seconds:g}); cut it, or {limits.raise_hint('max_audio_seconds')}")


def _check_file(path: str, limits: Limits) -> None:
    """Duration and rate of an audio file from its header, before reading it."""
    try:
        import soundfile

        info = soundfile.info(path)
    except Exception:  # noqa: BLE001 - load_audio reports a missing package or an unreadable file
        return
    check_audio_rate(int(info.samplerate), limits, name="the file's sample rate")
    _check_seconds(int(info.frames), int(info.samplerate), limits)


def _load_wave(source: Any, rate: int | None, layout: str | None, limits: Limits) -> tuple[np.ndarray, int]:
    from mmedge.runtime.audio import load_audio

    if isinstance(source, np.ndarray):
        if source.ndim == 2:
            samples = {"channels_first": source.shape[1], "channels_last": source.shape[0]}.get(layout, max(source.shape))
        else:
            samples = source.shape[0] if source.ndim else 1
        _check_seconds(samples, rate or 1, limits)
    else:
        _check_file(os.fspath(source), limits)
    return load_audio(source, sample_rate=rate, layout=layout)


def load_waves(items: Sequence[tuple[Any, int | None, str | None]], limits: Limits = DEFAULT_LIMITS
               ) -> list[tuple[np.ndarray, int]]:
    """Loads each ``(array_or_path, rate, layout)`` item as a mono float32 ``(wave, rate)``, errors named
    ``audio[i]``."""
    return [_named(f"audio[{i}]", lambda: _load_wave(source, rate, layout, limits))
            for i, (source, rate, layout) in enumerate(items)]


def check_stream_args(source: Any, text: Any, every: Any, max_frames: Any, limits: Limits = DEFAULT_LIMITS) -> None:
    """The arguments of ``Session.stream``, checked before the capture is opened."""
    if isinstance(source, bool) or not isinstance(source, (int, *_PATHS)) or (isinstance(source, int) and source < 0):
        raise InputError(f"source must be a camera index (an integer >= 0, e.g. 0) or a video file path, got {source!r}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InputError(f"every must be a positive integer, got {every!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise InputError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    if text is not None:
        text_items(text, limits)
