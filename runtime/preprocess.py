"""Preprocessing for every modality, shared by training and the device runtime.

Images and text live here; audio lives in ``mmedge.runtime.audio`` and is re-exported.
numpy, cv2 and tokenizers only: never torch.

How an image becomes the encoder's S x S input is a resize mode (``ImageSpec.resize``), one
``ResizeMode`` record each in ``RESIZE_MODES``: adding one is a ``register_resize_mode`` call
here (the manifest schema and ``preprocess_images`` read the registry). The modes resample with
the spec's ``interpolation`` (``mmedge.runtime.image_resize``: Pillow's filters in numpy, exact,
or OpenCV's): ``squash``, ``shortest_edge`` (+ centre crop) and ``letterbox``; ``bilinear``,
``area`` and ``nearest`` are the first bundles' modes (squash with OpenCV), kept for them.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmedge.errors import BundleError, InputError
from mmedge.registry import Registry
from mmedge.runtime.audio import fit_clip, load_audio, log_mel, mel_filterbank, preprocess_audio, resample
from mmedge.runtime.image_resize import (INTERPOLATIONS, Interpolation, center_crop, interpolation_names, letterbox,
                                         shortest_edge_size)
from mmedge.runtime.specs import ImageSpec, TextSpec

__all__ = [
    "load_image",
    "preprocess_images",
    "ResizeMode",
    "RESIZE_MODES",
    "register_resize_mode",
    "resize_mode_names",
    "TextTokenizer",
    "load_audio",
    "resample",
    "fit_clip",
    "log_mel",
    "mel_filterbank",
    "preprocess_audio",
]

_COLOR_ORDERS = ("RGB", "BGR")
_FLOAT_RANGE = (-0.01, 1.01)


# ----------------------------------------------------------------------------- resize modes


@dataclass(frozen=True)
class ResizeMode:
    """One way to bring an RGB image to the encoder's square input.

    Attributes:
        name: The ``ImageSpec.resize`` value that selects it.
        resize: ``resize(image, spec)``: uint8 (H, W, 3) -> uint8 (spec.size, spec.size, 3); it reads the
            spec's ``interpolation``, ``resize_size`` and ``pad_value`` as it needs.
        summary: One line for docs and messages.
    """

    name: str
    resize: Callable[[np.ndarray, ImageSpec], np.ndarray]
    summary: str


RESIZE_MODES: Registry[ResizeMode] = Registry("image resize mode")


def register_resize_mode(mode: ResizeMode) -> ResizeMode:
    """Registers ``mode`` under ``mode.name`` (a duplicate name is a ``RegistryError``)."""
    return RESIZE_MODES.register(mode.name)(mode)


def resize_mode_names() -> tuple[str, ...]:
    """The registered resize modes, sorted."""
    return tuple(RESIZE_MODES.names())


def _interpolation(spec: ImageSpec) -> Interpolation:
    if spec.interpolation not in INTERPOLATIONS:
        raise InputError(f"unknown ImageSpec.interpolation {spec.interpolation!r}; valid: {list(interpolation_names())}")
    return INTERPOLATIONS[spec.interpolation]


def _squash(image: np.ndarray, spec: ImageSpec, interpolation: Interpolation | None = None) -> np.ndarray:
    side = spec.resize_size or spec.size
    out = (interpolation or _interpolation(spec)).resize(image, (side, side))
    return center_crop(out, spec.size, spec.size)


def _shortest_edge(image: np.ndarray, spec: ImageSpec) -> np.ndarray:
    target = shortest_edge_size(image.shape[0], image.shape[1], spec.resize_size or spec.size)
    out = _interpolation(spec).resize(image, target) if target != image.shape[:2] else image
    return center_crop(out, spec.size, spec.size)


def _letterbox(image: np.ndarray, spec: ImageSpec) -> np.ndarray:
    out = letterbox(image, spec.resize_size or spec.size, _interpolation(spec), spec.pad_value)
    return center_crop(out, spec.size, spec.size)


for _mode in (
        ResizeMode("squash", _squash, "stretch to R x R (R = resize_size or size), then centre-crop S x S"),
        ResizeMode("shortest_edge", _shortest_edge, "shorter side to R keeping the aspect, then centre-crop S x S "
                                                    "(CLIP, ViT, timm)"),
        ResizeMode("letterbox", _letterbox, "fit into R x R keeping the aspect, pad with pad_value, then "
                                            "centre-crop S x S")):
    register_resize_mode(_mode)
for _name in ("bilinear", "area", "nearest"):  # the first bundles' modes: squash with OpenCV's interpolation
    register_resize_mode(ResizeMode(_name, functools.partial(_squash, interpolation=INTERPOLATIONS[f"cv2_{_name}"]),
                                    f"squash with OpenCV's {_name} (the first bundles' mode; interpolation not read)"))


# ----------------------------------------------------------------------------- images


def load_image(source, *, color_order: str = "RGB", max_pixels: int | None = None) -> np.ndarray:
    """Loads an image as an RGB uint8 array.

    Args:
        source: a file path (str or ``os.PathLike``), encoded PNG/JPEG bytes, or an
            ndarray (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped), uint8 or
            float in [0, 1].
        color_order: channel order of an ndarray ``source``: "RGB" or "BGR" (OpenCV
            camera frames). Files and bytes are always decoded correctly.
        max_pixels: refuse images of more pixels (height x width); for PNG and JPEG data
            the size is read from the header, before decoding. None: no limit.

    Returns:
        uint8 (H, W, 3), RGB, contiguous.

    Raises:
        InputError: a missing file, empty or undecodable bytes, or an array of the wrong
            shape, dtype or value range.
    """
    if color_order not in _COLOR_ORDERS:
        raise InputError(f"color_order must be one of {list(_COLOR_ORDERS)}, got {color_order!r}")
    if isinstance(source, (str, os.PathLike)):
        return _decode(_read_file(Path(source), max_pixels), f"file {source}", max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(np.frombuffer(source, dtype=np.uint8), "bytes", max_pixels)
    if isinstance(source, np.ndarray):
        if max_pixels is not None and source.ndim >= 2:
            _check_pixels(source.shape[1], source.shape[0], max_pixels)
        rgb = _to_rgb_channels(_to_uint8(source))
        return np.ascontiguousarray(rgb[..., ::-1] if color_order == "BGR" else rgb)
    raise InputError(f"image source must be a path, encoded bytes or a numpy array, got {type(source).__name__}")


def _read_file(path: Path, max_pixels: int | None = None) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"image file not found: {path}; check the path")
    if max_pixels is not None and path.stat().st_size > 4 * max_pixels + (1 << 20):
        raise InputError(f"image file {path} is {path.stat().st_size} bytes, too large for an image of at most "
                         f"{max_pixels} pixels; resize it first")
    return np.fromfile(path, dtype=np.uint8)  # works with non-ASCII paths, unlike cv2.imread


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(f"image is {width}x{height} = {width * height} pixels, more than max_image_pixels "
                         f"({max_pixels}); resize it first, or raise it with limits=Limits(max_image_pixels=...)")


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def encoded_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None for other data."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in _JPEG_SOF:
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _decode(buf: np.ndarray, what: str, max_pixels: int | None = None) -> np.ndarray:
    if buf.size == 0:
        raise InputError(f"image {what} is empty (0 bytes); pass PNG or JPEG data")
    size = encoded_size(buf[:1 << 16].tobytes()) if max_pixels is not None else None
    if size is not None:
        _check_pixels(*size, max_pixels)
    import cv2  # here, not at import: the runtime loads OpenCV only for image work

    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # (H, W, 3) BGR uint8, alpha dropped
    if bgr is None:
        raise InputError(f"cannot decode image {what} ({buf.size} bytes); pass PNG or JPEG data")
    if max_pixels is not None:
        _check_pixels(bgr.shape[1], bgr.shape[0], max_pixels)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.size == 0:
        raise InputError(f"image array is empty (shape {image.shape}); pass an (H, W, 3) image")
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise InputError(f"unsupported image dtype {image.dtype}; pass uint8 (0-255) or float (0-1)")
    if not np.isfinite(image).all():
        raise InputError("float image contains NaN or Inf values; clean it before passing it")
    lo, hi = float(image.min()), float(image.max())
    if lo < _FLOAT_RANGE[0] or hi > _FLOAT_RANGE[1]:
        raise InputError(f"float image has values in [{lo:g}, {hi:g}]: looks like 0-255 floats; "
                         "pass uint8 or divide by 255")
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _to_rgb_channels(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)  # grayscale -> 3 equal channels
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def preprocess_images(images: Sequence[np.ndarray], spec: ImageSpec) -> np.ndarray:
    """Builds the image encoder input for a batch of RGB images.

    Each image is brought to ``spec.size`` x ``spec.size`` by the resize mode named by
    ``spec.resize`` (``RESIZE_MODES``), scaled to [0, 1], normalized by ``spec.mean`` / ``spec.std``
    (per channel, in ``spec.channel_order``) and laid out NCHW.

    Args:
        images: uint8 (H, W, 3) RGB arrays, e.g. from ``load_image``; sizes may differ.
        spec: the image spec.

    Returns:
        float32 (N, 3, size, size), contiguous.
    """
    if spec.resize not in RESIZE_MODES:
        raise InputError(f"unknown ImageSpec.resize {spec.resize!r}; valid: {list(resize_mode_names())}")
    if spec.channel_order not in _COLOR_ORDERS:
        raise InputError(f"unknown ImageSpec.channel_order {spec.channel_order!r}; valid: {list(_COLOR_ORDERS)}")
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence) or len(images) == 0:
        raise InputError("preprocess_images takes a non-empty list of (H, W, 3) uint8 RGB arrays")
    mode = RESIZE_MODES[spec.resize]
    batch = np.stack([_resized(mode, _check_rgb(im, i), spec) for i, im in enumerate(images)])  # (N, S, S, 3)
    if spec.channel_order == "BGR":
        batch = batch[..., ::-1]
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(spec.std, dtype=np.float32)
    x = (batch.astype(np.float32) * np.float32(1.0 / 255.0) - mean) * inv_std  # (N, S, S, 3)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)  # (N, 3, S, S)


def _resized(mode: ResizeMode, image: np.ndarray, spec: ImageSpec) -> np.ndarray:
    size = spec.size
    out = mode.resize(image, spec)
    if out.shape != (size, size, 3) or out.dtype != np.uint8:
        raise InputError(f"resize mode {mode.name!r} gave {out.dtype} {list(out.shape)}, not uint8 [{size}, {size}, 3]")
    return out


def _check_rgb(image, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"images[{index}] is {what}; pass (H, W, 3) uint8 RGB (use load_image)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"images[{index}] is empty (shape {image.shape})")
    return image


# ----------------------------------------------------------------------------- text


class TextTokenizer:
    """Tokenizer over a HuggingFace ``tokenizer.json``.

    Truncates every text to ``spec.max_length`` tokens as the Hugging Face fast tokenizer does (the
    special tokens its post-processor adds are kept) and pads with ``spec.pad_token``: to exactly
    ``max_length`` (``bucket=0``, or ``spec.padding="max_length"``), or to the batch's longest text
    rounded up to a multiple of ``bucket`` and capped at ``max_length`` (for graphs whose token axis
    is dynamic: a 10-token caption then costs 16 tokens of encoder work, not 32; the attention
    mask hides the padding either way; ``bucket=1`` is ``padding=True``). If ``spec.lowercase`` is
    true, texts are lowercased before encoding (harmless when the tokenizer's normalizer lowercases too).

    Args:
        path: the ``tokenizer.json`` file, or a folder holding ``spec.tokenizer_file``.
        spec: the text spec.
        data: the file's bytes, already read (and verified) by the caller; ``path`` then only
            names it in messages.
        bucket: pad to a multiple of this many tokens (0: always to ``max_length``).

    Raises:
        BundleError: the file is missing, unreadable, or lacks ``spec.pad_token`` (or gives it another id
            than ``spec.pad_id``).
    """

    def __init__(self, path, spec: TextSpec, *, data: bytes | None = None, bucket: int = 0) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        if data is None and path.is_dir():
            path = path / spec.tokenizer_file
        if data is None and not path.is_file():
            raise BundleError(f"tokenizer file not found: {path}; check the bundle or pass the tokenizer.json path")
        if spec.max_length <= 0:
            raise InputError(f"TextSpec.max_length must be positive, got {spec.max_length}")
        if bucket < 0:
            raise InputError(f"bucket must be 0 (pad to max_length) or a positive token count, got {bucket}")
        try:
            if data is None:
                self._tokenizer = Tokenizer.from_file(str(path))
            else:
                self._tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise BundleError(f"cannot read tokenizer file {path}: {str(exc)[:300]}; re-export the bundle") from exc
        pad_id = self._tokenizer.token_to_id(spec.pad_token)
        if pad_id is None:
            raise BundleError(f"tokenizer {path} has no {spec.pad_token!r} token (TextSpec.pad_token); set pad_token "
                              "to one of its tokens (a model's own pad or eos token) or use a tokenizer.json with it")
        if spec.pad_id >= 0 and spec.pad_id != pad_id:
            raise BundleError(f"tokenizer {path} gives {spec.pad_token!r} id {pad_id}, but the spec says pad_id "
                              f"{spec.pad_id}: the tokenizer is not the one the model was exported with; re-export")
        self._tokenizer.enable_truncation(max_length=spec.max_length)
        self._tokenizer.no_padding()
        self.spec = spec
        self.path = path
        self.pad_id = pad_id
        self.bucket = bucket if spec.padding == "longest" else 0  # "max_length": always the full length

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenizes a batch of texts.

        Args:
            texts: non-empty strings.

        Returns:
            ``{"input_ids": int64 (N, L), "attention_mask": int64 (N, L)}``: L is ``max_length``, or
            with ``bucket`` the longest text's token count rounded up to a multiple of it.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
            raise InputError("TextTokenizer takes a non-empty list of strings (wrap a single text in a list)")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"texts[{i}] is a {type(text).__name__}, not a str; pass strings")
            if not text.strip():
                raise InputError(f"texts[{i}] is empty or whitespace only; pass some text")
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise InputError(f"texts[{i}] holds a lone surrogate, which is not valid Unicode; decode "
                                     "the bytes with errors='replace' first") from None
        if self.spec.lowercase:
            texts = [t.lower() for t in texts]
        encodings = self._tokenizer.encode_batch(list(texts))
        length = self._padded_length(max(len(e.ids) for e in encodings))
        ids = np.full((len(encodings), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, :len(e.ids)] = e.ids
            mask[i, :len(e.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def _padded_length(self, longest: int) -> int:
        if self.bucket <= 0:
            return self.spec.max_length
        return min(self.spec.max_length, -(-longest // self.bucket) * self.bucket)
